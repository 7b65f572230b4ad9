condor_status -direct <127.0.0.1:44041> -af Name SlotType State Activity JobId
