/*
 * gpusvm_steps [--no-probe]: what the GPU SVM library (drivers/gpu/drm/drm_gpusvm.c) does with each event,
 * through the harness's fake GPU (/dev/gpusvm_mirror, ../gpusvm/gpusvm_device.c) mirroring 64 pages of this
 * process: four GPU SVM ranges of 64 KiB (pages 0-15, 16-31, 32-47, 48-63), page i filled with byte i+1.
 *
 * Steps, in order, each an operation then a device read of every page still mapped:
 *   bind            none: the first read faults the four ranges in
 *   mprotect        mprotect(PROT_READ) of pages 0-15            (range 0 exactly)
 *   dontneed        MADV_DONTNEED of pages 16-31                 (range 1 exactly)
 *   munmap_part     munmap of pages 40-43                        (inside range 2)
 *   munmap_whole    munmap of pages 48-63                        (range 3 exactly)
 * Around each operation, the count of invalidations the device recorded (debugfs gpusvm_mirror/counters,
 * "recorded") and of the probe's records (its classic notifier on this mm, unless --no-probe): the host reads
 * both logs between them. After the operation, and again after the read, the device's ranges
 * (GSM_IOCTL_RANGES: [start, end, valid, unmapped, partial_unmap]).
 * Last stdout line: {"workload":"gpusvm_steps",...,"steps":[{"op":..,"start":..,"end":..,"gsm":[before,after],
 * "probe":[before,after],"ranges_after_op":[..],"faults":..,"retries":..,"read_pages":..,"mismatched":..,
 * "ranges_after_read":[..]},..],"ranges":{"target":[start,end]}}
 */
#define _GNU_SOURCE
#include "../programs/probe.h"
#include "../gpusvm/gpusvm_mirror.h"

#include <sys/ioctl.h>

#define NPAGES 64
#define GSM_COUNTERS "/sys/kernel/debug/gpusvm_mirror/counters"

static int dev;
static char *p, *buf;
static int mapped[NPAGES];

static long long gsm_recorded(void)
{
	char line[128];
	long long n = -1;
	FILE *f = fopen(GSM_COUNTERS, "r");

	if (!f)
		die("open " GSM_COUNTERS);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "recorded %lld", &n) == 1)
			break;
	fclose(f);
	return n;
}

static void print_ranges(const char *name)
{
	static struct gsm_ranges r;

	if (ioctl(dev, GSM_IOCTL_RANGES, &r))
		die("GSM_IOCTL_RANGES");
	printf(",\"%s\":[", name);
	for (unsigned long long i = 0; i < r.count; i++)
		printf("%s[%llu,%llu,%u,%u,%u]", i ? "," : "", (unsigned long long)r.range[i].start,
		       (unsigned long long)r.range[i].end, r.range[i].valid, r.range[i].unmapped,
		       r.range[i].partial_unmap);
	printf("]");
}

/* The device reads every run of mapped pages; the pages whose bytes differ from the CPU's are counted. */
static void device_read_mapped(void)
{
	unsigned long long faults = 0, retries = 0, pages = 0, mismatched = 0;

	for (int i = 0; i < NPAGES;) {
		struct gsm_cmd cmd;
		int n = 0;

		if (!mapped[i]) {
			i++;
			continue;
		}
		while (i + n < NPAGES && mapped[i + n])
			n++;
		memset(&cmd, 0, sizeof(cmd));
		cmd.addr = (unsigned long)(p + i * page);
		cmd.ptr = (unsigned long)buf;
		cmd.npages = n;
		if (ioctl(dev, GSM_IOCTL_READ, &cmd))
			die("GSM_IOCTL_READ");
		faults += cmd.faults;
		retries += cmd.retries;
		for (int k = 0; k < n; k++)
			mismatched += !!memcmp(buf + k * page, p + (i + k) * page, page);
		pages += n;
		i += n;
	}
	printf(",\"faults\":%llu,\"retries\":%llu,\"read_pages\":%llu,\"mismatched\":%llu", faults, retries, pages,
	       mismatched);
}

static void step(const char *op, int first, int count)
{
	char *start = p + first * page;
	size_t len = count * page;
	long long gsm0 = gsm_recorded(), probe0 = probe_recorded();

	if (!strcmp(op, "mprotect") && mprotect(start, len, PROT_READ))
		die("mprotect");
	if (!strcmp(op, "dontneed") && madvise(start, len, MADV_DONTNEED))
		die("madvise");
	if (!strncmp(op, "munmap", 6)) {
		if (munmap(start, len))
			die("munmap");
		for (int i = first; i < first + count; i++)
			mapped[i] = 0;
	}
	printf("%s{\"op\":\"%s\",\"start\":%lu,\"end\":%lu,\"gsm\":[%lld,%lld],\"probe\":[%lld,%lld]",
	       strcmp(op, "bind") ? "," : "", op, (unsigned long)start, (unsigned long)(start + len), gsm0,
	       gsm_recorded(), probe0, probe_recorded());
	print_ranges("ranges_after_op");
	device_read_mapped();
	print_ranges("ranges_after_read");
	printf("}");
}

int main(int argc, char **argv)
{
	setup(argc, argv);
	probe_watch_self(argc, argv);
	p = map_isolated(NPAGES * page, PROT_READ | PROT_WRITE);
	buf = malloc(NPAGES * page);
	if (!buf)
		die("malloc");
	for (int i = 0; i < NPAGES; i++) {
		memset(p + i * page, i + 1, page);
		mapped[i] = 1;
	}
	dev = open("/dev/gpusvm_mirror", O_RDWR | O_CLOEXEC);	/* a GPU VM of this mm */
	if (dev < 0)
		die("open /dev/gpusvm_mirror");
	add_range("target", p, NPAGES * page);

	json_begin("gpusvm_steps", "steps");
	printf(",\"steps\":[");
	step("bind", 0, 0);
	step("mprotect", 0, 16);
	step("dontneed", 16, 16);
	step("munmap_part", 40, 4);
	step("munmap_whole", 48, 16);
	printf("]");
	json_end();
	close(dev);
	return 0;
}
