condor_q -allusers -json -attributes ClusterId,ProcId,JobStatus,AutoClusterId
