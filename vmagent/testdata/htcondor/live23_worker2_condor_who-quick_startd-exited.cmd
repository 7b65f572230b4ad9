condor_who -quick
