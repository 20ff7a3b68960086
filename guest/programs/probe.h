/*
 * What every guest workload shares: subscribing the mmu_probe module to its own mm, memory placed so
 * that the events it causes are easy to tell apart, /proc/self/pagemap, and the JSON summary.
 *
 * The summary is the LAST line on stdout, one JSON object:
 *   {"workload":W,"case":C,"pid":P,"page_size":N,"probed":0|1, <extras>, "ranges":{"name":[start,end],..}}
 * Ranges are [start, end) in bytes, as integers; the host matches events against them by name.
 */
#ifndef GUEST_PROBE_H
#define GUEST_PROBE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PROBE_DIR "/sys/kernel/debug/mmu_probe"
#define PROBE_WATCH PROBE_DIR "/watch"
#define PMD_SIZE (2UL << 20)
#define MAX_RANGES 16

static long page;		/* the page size, set by setup() */
static int probed;		/* 1 once the probe watches this mm */
static int no_probe;		/* --no-probe: run unobserved */
static int two_pass_range;	/* --two-pass: the interval notifier of probe_watch_range_self() in two passes (7.x) */

static struct {
	const char *name;
	unsigned long start, end;
} ranges[MAX_RANGES];
static int nranges;

static inline void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(1);
}

static inline void fail(const char *what)
{
	fprintf(stderr, "%s\n", what);
	exit(1);
}

static inline int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* A sysfs flag ("Y"/"1"): 1 if set, 0 if not or unreadable. */
static inline int read_flag(const char *path)
{
	char c = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return 0;
	if (fread(&c, 1, 1, f) != 1)
		c = 0;
	fclose(f);
	return c == 'Y' || c == '1';
}

/*
 * Page size, --no-probe, and one CPU for the whole run: pages faulted in sit in this CPU's LRU batch,
 * which the lru_add_drain() of madvise and reclaim empties, so the same pages are found each time.
 */
static inline void setup(int argc, char **argv)
{
	cpu_set_t set;

	page = sysconf(_SC_PAGESIZE);
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--no-probe"))
			no_probe = 1;
	CPU_ZERO(&set);
	CPU_SET(sched_getcpu(), &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity");
}

/* The case name: the first argument that is not an option, or the default. */
static inline const char *case_arg(int argc, char **argv, const char *dflt)
{
	for (int i = 1; i < argc; i++)
		if (strncmp(argv[i], "--", 2))
			return argv[i];
	return dflt;
}

/* Subscribe the probe's classic mmu_notifier to this process's mm; with --no-probe run unobserved. Reads
 * --two-pass too, for probe_watch_range_self(). */
static inline int probe_watch_self(int argc, char **argv)
{
	char buf[32];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-probe"))
			no_probe = 1;
		if (!strcmp(argv[i], "--two-pass"))
			two_pass_range = 1;
	}
	if (no_probe)
		return 0;
	snprintf(buf, sizeof(buf), "%d", getpid());
	if (write_file(PROBE_WATCH, buf))
		die("write " PROBE_WATCH);
	probed = 1;
	return 1;
}

/* Also subscribe an mmu_interval_notifier on [start, end) of this mm. */
static inline void probe_watch_range_self(void *start, size_t len)
{
	char buf[80];

	if (no_probe)
		return;
	snprintf(buf, sizeof(buf), "%d %lu %lu%s", getpid(), (unsigned long)start, (unsigned long)start + len,
		 two_pass_range ? " twopass" : "");
	if (write_file(PROBE_DIR "/watch_range", buf))
		die("write " PROBE_DIR "/watch_range");
}

/* Records the probe ever wrote: events with seq >= this value happened after the call. */
static inline long long probe_recorded(void)
{
	char line[128];
	long long n = -1;
	FILE *f;

	if (no_probe)
		return -1;
	f = fopen(PROBE_DIR "/counters", "r");
	if (!f)
		die("open " PROBE_DIR "/counters");
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "recorded %lld", &n) == 1)
			break;
	fclose(f);
	return n;
}

static inline void touch(char *p, size_t len, long step)
{
	for (size_t off = 0; off < len; off += step)
		p[off] = 1;
}

/*
 * len bytes of private anonymous memory starting at a 2 MiB boundary, between PROT_NONE guards: it
 * merges with no neighbour, no mremap realigns it, and below 2 MiB it can never get a huge page.
 */
static inline char *map_isolated(size_t len, int prot)
{
	size_t span = len + 2 * PMD_SIZE;
	char *r = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *p;

	if (r == MAP_FAILED)
		die("mmap reserve");
	p = (char *)(((unsigned long)r + page + PMD_SIZE - 1) & ~(PMD_SIZE - 1));
	if (mmap(p, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p)
		die("mmap fixed");
	return p;
}

/* /proc/self/pagemap entries (one u64 per page) for n pages from p. */
static inline void pagemap_read(void *p, size_t n, uint64_t *out)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	off_t off = (unsigned long)p / page * sizeof(uint64_t);

	if (fd < 0)
		die("open /proc/self/pagemap");
	if (pread(fd, out, n * sizeof(uint64_t), off) != (ssize_t)(n * sizeof(uint64_t)))
		die("read /proc/self/pagemap");
	close(fd);
}

static inline void add_range(const char *name, void *start, size_t len)
{
	if (nranges == MAX_RANGES)
		fail("too many ranges");
	ranges[nranges].name = name;
	ranges[nranges].start = (unsigned long)start;
	ranges[nranges].end = (unsigned long)start + len;
	nranges++;
}

static inline void json_begin(const char *workload, const char *kase)
{
	printf("{\"workload\":\"%s\",\"case\":\"%s\",\"pid\":%d,\"page_size\":%ld,\"probed\":%d", workload, kase,
	       getpid(), page, probed);
}

static inline void json_int(const char *name, long long value)
{
	printf(",\"%s\":%lld", name, value);
}

static inline void json_u64s(const char *name, const uint64_t *v, size_t n)
{
	printf(",\"%s\":[", name);
	for (size_t i = 0; i < n; i++)
		printf("%s%" PRIu64, i ? "," : "", v[i]);
	printf("]");
}

static inline void json_end(void)
{
	printf(",\"ranges\":{");
	for (int i = 0; i < nranges; i++)
		printf("%s\"%s\":[%lu,%lu]", i ? "," : "", ranges[i].name, ranges[i].start, ranges[i].end);
	printf("}}\n");
	fflush(stdout);
}

#endif
