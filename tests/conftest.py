# These suites are run by tests/test_faults.py and tests/test_driver_faults.py inside `harness run`
# with fault modules loaded, where their faults are the point: never collected directly.
collect_ignore = ["fault_suite", "driver_fault_suite"]
