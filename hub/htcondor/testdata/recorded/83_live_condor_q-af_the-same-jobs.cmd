condor_q -allusers -af ClusterId ProcId JobStatus AutoClusterId
