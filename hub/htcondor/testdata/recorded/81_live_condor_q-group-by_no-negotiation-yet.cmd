condor_q -allusers -group-by -json -constraint JobStatus =?= 1 || JobStatus =?= undefined -attributes CanopyGroup,RequestCpus
