condor_drain -graceful -reason canopy: test slot1@worker1
