condor_q -allusers -group-by-nonexistent -json
