/*
 * race_hmm CASE [--pages=N] [--rounds=R] [--ops=K] [--seconds=S]: the race workloads
 * (../programs/race.h) against a real in-tree mirror, lib/test_hmm.c's /dev/hmm_dmirror0, on N pages
 * (at most 64: one dmirror_range_fault() per device fault, see below).
 *
 * The device access is HMM_DMIRROR_READ of the range: the device reads its own page table and faults
 * what it lost back in (lib/test_hmm.c:dmirror_fault -> dmirror_range_fault: mmu_interval_read_begin,
 * hmm_range_fault, then mmu_interval_read_retry under dmirror->mutex, looping while the sequence moved).
 * cmd.faults counts the device faults that succeeded. With at most 64 pages each is one
 * dmirror_range_fault() call, so mmu_interval_read_begin() runs once per fault, once per failed access
 * and once more per retry: the host counts its calls with a kprobe and takes "faults" and
 * "access_errors" away to get the retries (a lower bound: a failed access may have retried first).
 * The verify, with both threads quiet: the same read again, and the pages whose bytes differ from what
 * the CPU reads now ("mismatched": a device mapping an old frame reads old bytes).
 * Prints "faults" and "mismatched" with race.h's fields.
 */
#include "../programs/race.h"

#include <lib/test_hmm_uapi.h>
#include <sys/ioctl.h>

static int dev = -1;
static char *buf;
static long long faults, mismatched;

static int dmirror_read(void)
{
	struct hmm_dmirror_cmd cmd;

	memset(&cmd, 0, sizeof(cmd));
	cmd.addr = (unsigned long)p;
	cmd.ptr = (unsigned long)buf;
	cmd.npages = mpages;
	while (ioctl(dev, HMM_DMIRROR_READ, &cmd))
		if (errno != EINTR)
			return errno;
	faults += cmd.faults;
	return 0;
}

static void device_setup(const char **pos)
{
	(void)pos;
	if (mpages > 64)
		fail("race_hmm mirrors at most 64 pages (one dmirror_range_fault per device fault)");
	dev = open("/dev/hmm_dmirror0", O_RDWR);
	if (dev < 0)
		die("open /dev/hmm_dmirror0");
	buf = malloc(mpages * page);
	if (!buf)
		fail("malloc");
}

static int device_access(void)
{
	return dmirror_read();
}

static int device_verify(int quiet)
{
	int err;

	if (!quiet)
		return 0;	/* the other CPU is writing the pages: no moment to compare at */
	err = dmirror_read();
	if (!err)
		mismatched += pages_differing(buf);
	return err;
}

static void device_json(void)
{
	json_int("faults", faults);
	json_int("mismatched", mismatched);
}

int main(int argc, char **argv)
{
	const char *pos[1] = { 0 };

	return race_main(argc, argv, pos, 1, "usage: race_hmm CASE [--pages=N] [--rounds=R] [--ops=K] [--seconds=S]");
}
