/*
 * hmm_mirror: a range of this process mirrored by lib/test_hmm.c's device (/dev/hmm_dmirror0), then
 * mprotect / madvise / mremap / munmap on it, with what the device sees, page by page, after each.
 *
 * The device keeps its own page table of the range: HMM_DMIRROR_READ fills it, faulting in (and
 * counting) what is missing; its interval notifier drops entries when the CPU side changes. So a
 * one-page READ that needs no fault means the device still held that page: the invalidation missed
 * it. HMM_DMIRROR_SNAPSHOT gives the CPU page table as the device would map it (test_hmm_uapi.h
 * HMM_DMIRROR_PROT_*).
 *
 * 16 pages, page i filled with byte i+1, all mirrored first. Steps, in order:
 *   mirror (READ of all 16), mprotect_read 8..11, madvise_dontneed 4..5, mremap_move 0..3 to a
 *   reserved place, munmap 12..15.
 * After each step, per page of the original 16 (and of the moved 4, as "new_*"):
 *   prot:   the SNAPSHOT byte, or -1 where the snapshot failed (nothing mapped)
 *   device: 1 the device still held the page, 0 it had to fault it back in, -1 the READ failed
 *   data:   1 the device read the page's original byte (or zeros after MADV_DONTNEED), else 0
 * Last stdout line: {"workload":"hmm_mirror","pid":..,"page_size":..,"probed":..,"start":..,"end":..,
 * "new":..,"steps":[{"op":..,"start":..,"end":..,"ret":..,"errno":..,"cpages":..,"faults":..,
 * "prot":[..],"device":[..],"data":[..],"new_prot":[..],"new_device":[..],"new_data":[..]},...]}
 */
#define _GNU_SOURCE
#include "../programs/probe.h"

#include <lib/test_hmm_uapi.h>
#include <sys/ioctl.h>

#define NPAGES 16
#define NMOVED 4

static int dev;
static unsigned char *buf;
static int dropped[NPAGES]; /* pages that MADV_DONTNEED emptied: they read as zeros */

static int dmirror(unsigned long request, char *addr, size_t npages, struct hmm_dmirror_cmd *cmd)
{
	memset(cmd, 0, sizeof(*cmd));
	cmd->addr = (unsigned long)addr;
	cmd->ptr = (unsigned long)buf;
	cmd->npages = npages;
	for (;;) {
		int ret = ioctl(dev, request, cmd);

		if (ret == 0 || errno != EINTR)
			return ret;
	}
}

static void print_ints(const char *name, const int *v, int n)
{
	printf(",\"%s\":[", name);
	for (int i = 0; i < n; i++)
		printf("%s%d", i ? "," : "", v[i]);
	printf("]");
}

/* What the CPU page table and the device show for n pages from addr, page k holding byte first+k. */
static void show(const char *prefix, char *addr, int n, int first)
{
	int prot[NPAGES], device[NPAGES], data[NPAGES];
	struct hmm_dmirror_cmd cmd;
	char name[32];

	for (int k = 0; k < n; k++) {
		char *pg = addr + k * page;

		prot[k] = dmirror(HMM_DMIRROR_SNAPSHOT, pg, 1, &cmd) ? -1 : buf[0];
		if (dmirror(HMM_DMIRROR_READ, pg, 1, &cmd)) {
			device[k] = data[k] = -1;
			continue;
		}
		device[k] = cmd.faults == 0;
		data[k] = 1;
		for (long i = 0; i < page; i++)
			if (buf[i] != (dropped[first - 1 + k] ? 0 : first + k))
				data[k] = 0;
	}
	snprintf(name, sizeof(name), "%sprot", prefix);
	print_ints(name, prot, n);
	snprintf(name, sizeof(name), "%sdevice", prefix);
	print_ints(name, device, n);
	snprintf(name, sizeof(name), "%sdata", prefix);
	print_ints(name, data, n);
}

static int first_step = 1;

static void step(const char *op, char *start, size_t len, long ret, const struct hmm_dmirror_cmd *cmd)
{
	printf("%s{\"op\":\"%s\",\"start\":%lu,\"end\":%lu,\"ret\":%ld,\"errno\":%d", first_step ? "" : ",", op,
	       (unsigned long)start, (unsigned long)start + len, ret, ret < 0 ? errno : 0);
	if (cmd)
		printf(",\"cpages\":%llu,\"faults\":%llu", (unsigned long long)cmd->cpages,
		       (unsigned long long)cmd->faults);
	first_step = 0;
}

int main(int argc, char **argv)
{
	struct hmm_dmirror_cmd cmd;
	long ret;

	setup(argc, argv);
	size_t len = NPAGES * page;
	dev = open("/dev/hmm_dmirror0", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		die("open /dev/hmm_dmirror0");
	buf = malloc(len);
	if (!buf)
		die("malloc");
	char *p = map_isolated(len, PROT_READ | PROT_WRITE);
	for (int i = 0; i < NPAGES; i++)
		memset(p + i * page, i + 1, page);
	char *to = map_isolated(NMOVED * page, PROT_NONE); /* where pages 0..3 will move */
	probe_watch_self(argc, argv);
	printf("{\"workload\":\"hmm_mirror\",\"pid\":%d,\"page_size\":%ld,\"probed\":%d,\"start\":%lu,\"end\":%lu,"
	       "\"new\":%lu,\"steps\":[", getpid(), page, probed, (unsigned long)p, (unsigned long)p + len,
	       (unsigned long)to);

	ret = dmirror(HMM_DMIRROR_READ, p, NPAGES, &cmd);
	step("mirror", p, len, ret, &cmd);
	show("", p, NPAGES, 1);
	printf("}");

	ret = mprotect(p + 8 * page, 4 * page, PROT_READ);
	step("mprotect_read", p + 8 * page, 4 * page, ret, NULL);
	show("", p, NPAGES, 1);
	printf("}");

	ret = madvise(p + 4 * page, 2 * page, MADV_DONTNEED);
	dropped[4] = dropped[5] = 1;
	step("madvise_dontneed", p + 4 * page, 2 * page, ret, NULL);
	show("", p, NPAGES, 1);
	printf("}");

	ret = mremap(p, NMOVED * page, NMOVED * page, MREMAP_MAYMOVE | MREMAP_FIXED, to) == to ? 0 : -1;
	step("mremap_move", p, NMOVED * page, ret, NULL);
	show("", p, NPAGES, 1);
	show("new_", to, NMOVED, 1);
	printf("}");

	ret = munmap(p + 12 * page, 4 * page);
	step("munmap", p + 12 * page, 4 * page, ret, NULL);
	show("", p, NPAGES, 1);
	printf("}");

	printf("]}\n");
	return 0;
}
