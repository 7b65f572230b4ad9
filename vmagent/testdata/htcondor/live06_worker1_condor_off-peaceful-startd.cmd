condor_off -peaceful -startd
