condor_status -direct worker1 -af Name SlotType State Activity JobId
