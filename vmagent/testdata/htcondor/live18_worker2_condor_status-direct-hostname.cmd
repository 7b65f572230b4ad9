condor_status -direct worker2.canopy.test -af Name SlotType State Activity JobId
