condor_q -allusers -autocluster -json
