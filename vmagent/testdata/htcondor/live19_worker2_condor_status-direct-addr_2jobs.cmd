condor_status -direct <127.0.0.1:45319> -af Name SlotType State Activity JobId
