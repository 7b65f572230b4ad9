condor_off -peaceful -master
