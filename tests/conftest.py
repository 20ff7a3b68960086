# tests/fault_suite/ is run by tests/test_faults.py inside `harness run`, where its faults are the point.
collect_ignore = ["fault_suite"]
