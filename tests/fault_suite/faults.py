"""Writing to the fault_inject module's debugfs files (guest/faults/fault_inject.c)."""

INJECT = "/sys/kernel/debug/fault_inject"


def inject(guest, fault: str, value: str = "1", timeout: float = 60):
    return guest.run(["sh", "-c", f'echo "$1" > {INJECT}/{fault}', "inject", value], timeout=timeout)
