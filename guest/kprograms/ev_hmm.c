/*
 * ev_hmm CASE ro|rw [--pages=N] [--iters=K] [--dir=D]: the evidence workloads (../programs/ev_cases.h)
 * against a real in-tree device mirror, lib/test_hmm.c's /dev/hmm_dmirror0, instead of the probe's
 * model driver; the same range (the first min(N, 4096) pages) and the same operations.
 *
 * test_hmm mirrors the whole mm with one interval notifier; its invalidate callback
 * (dmirror_interval_invalidate) drops the device's entries for every invalidated range unless the event
 * is its own MIGRATE: it behaves like the model's "blind" mode. The device access is HMM_DMIRROR_READ
 * (ro) or HMM_DMIRROR_WRITE (rw, of the bytes the pages already hold) of the mirrored range: the device
 * reads its page table and, at the first page it lost, faults the rest back in with hmm_range_fault();
 * cmd.faults counts those fault rounds (lib/test_hmm.c:dmirror_read/dmirror_write).
 * The verify: the same access again, timed apart ("warm": the device holds every page now, so it
 * should need no fault), then (ro) the pages the device read that differ from what the CPU reads now.
 *
 * Prints ev_json_common's fields and "perm", "first_faults" (of the first access, before the loop),
 * "faults" (the sum of cmd.faults over the K timed accesses), "faulted_accesses" (how many of them
 * needed at least one), "warm_faults" (cmd.faults summed over the K warm accesses: 0 unless something
 * invalidated the range in between), "warm_access_median_cycles" (TSC cycles of one warm access: set
 * against access_median_cycles, what a re-fault costs this device), "mismatched" (-1 for rw).
 */
#include "../programs/ev_cases.h"

#include <lib/test_hmm_uapi.h>
#include <sys/ioctl.h>

static int dev, rw;
static char *buf;	/* the device's data: what it read, or what it writes */
static unsigned long long last_faults, faults, faulted_accesses, warm_faults, mismatched;
static long long *warm_cycles;
static size_t warm_n;

/* One device access of the mirrored range; returns cmd.faults. */
static unsigned long long dmirror_access(struct ev *ev)
{
	struct hmm_dmirror_cmd cmd;
	unsigned long request = rw ? HMM_DMIRROR_WRITE : HMM_DMIRROR_READ;

	memset(&cmd, 0, sizeof(cmd));
	cmd.addr = (unsigned long)ev->p;
	cmd.ptr = (unsigned long)buf;
	cmd.npages = ev->mpages;
	while (ioctl(dev, request, &cmd))
		if (errno != EINTR)
			die(rw ? "HMM_DMIRROR_WRITE" : "HMM_DMIRROR_READ");
	if (cmd.cpages != ev->mpages)
		fail("the device copied fewer pages than mirrored");
	return cmd.faults;
}

static void hmm_access(struct ev *ev)
{
	last_faults = dmirror_access(ev);
}

static void hmm_verify(struct ev *ev)
{
	faults += last_faults;
	faulted_accesses += last_faults > 0;
	long long t0 = ev_cycles();
	warm_faults += dmirror_access(ev);
	warm_cycles[warm_n++] = ev_cycles() - t0;
	if (rw)
		return;
	for (size_t i = 0; i < ev->mpages; i++)
		if (memcmp(buf + i * page, ev->p + i * page, page))
			mismatched++;
}

int main(int argc, char **argv)
{
	struct ev ev;
	unsigned long long first_faults;

	setup(argc, argv);
	ev_args(&ev, argc, argv, 2, "usage: ev_hmm CASE ro|rw [--pages=N] [--iters=K] [--dir=D]");
	if (strcmp(ev.pos[1], "ro") && strcmp(ev.pos[1], "rw"))
		fail("usage: ev_hmm CASE ro|rw [--pages=N] [--iters=K] [--dir=D]");
	rw = !strcmp(ev.pos[1], "rw");
	if (rw && !strcmp(ev.kase, "compaction"))
		fail("compaction is read-only: a write fault would fill the holes");
	dev = open("/dev/hmm_dmirror0", O_RDWR | O_CLOEXEC);	/* the mirror of this mm starts here */
	if (dev < 0)
		die("open /dev/hmm_dmirror0");
	ev_map(&ev);
	buf = malloc(ev.mlen);
	warm_cycles = calloc(ev.iters ? ev.iters : 1, sizeof(*warm_cycles));
	if (!buf || !warm_cycles)
		die("malloc");
	if (rw)	/* the device writes back what the pages hold: the workloads' writes are idempotent */
		memcpy(buf, ev.p, ev.mlen);
	first_faults = dmirror_access(&ev);	/* the first fault, outside the timed loop */

	ev_loop(&ev, hmm_access, hmm_verify);

	json_begin("ev_hmm", ev.kase);
	printf(",\"perm\":\"%s\"", ev.pos[1]);
	json_int("first_faults", first_faults);
	json_int("faults", faults);
	json_int("faulted_accesses", faulted_accesses);
	json_int("warm_faults", warm_faults);
	qsort(warm_cycles, warm_n, sizeof(*warm_cycles), ev_cmp_ll);
	json_int("warm_access_median_cycles", warm_n ? warm_cycles[warm_n / 2] : 0);
	json_int("mismatched", rw ? -1 : (long long)mismatched);
	ev_json_common(&ev);
	json_end();
	close(dev);
	if (ev.fd >= 0)
		close(ev.fd);
	return 0;
}
