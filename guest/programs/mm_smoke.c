/*
 * mm_smoke: every memory operation the event suite observes, checked for its user-visible effect
 * only, so that it means the same on a kernel with or without CONFIG_MMU_NOTIFIER. Exits 1 at the
 * first effect that is wrong; prints {"workload":"mm_smoke","checks":[...]} when all hold.
 */
#define _GNU_SOURCE
#include <sys/mman.h>
#include <sys/wait.h>

#include "probe.h"

static long page;
static char checks[1024];

static void check(int ok, const char *name)
{
	if (!ok) {
		fprintf(stderr, "mm_smoke: %s: wrong result (errno %d: %s)\n", name, errno, strerror(errno));
		exit(1);
	}
	strncat(checks, checks[0] ? ",\"" : "\"", sizeof(checks) - strlen(checks) - 1);
	strncat(checks, name, sizeof(checks) - strlen(checks) - 1);
	strncat(checks, "\"", sizeof(checks) - strlen(checks) - 1);
}

static int pattern_ok(const char *p, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (p[i * page] != (char)(i + 1))
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	size_t n = 64;
	char *p, *q;
	pid_t child;
	int status, fd;

	page = sysconf(_SC_PAGESIZE);
	probe_watch_self(argc, argv);
	p = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	check(p != MAP_FAILED, "mmap");
	for (size_t i = 0; i < n; i++)
		p[i * page] = (char)(i + 1);

	check(mprotect(p, n * page, PROT_READ) == 0 && pattern_ok(p, 0, n), "mprotect_ro");
	check(mprotect(p, n * page, PROT_READ | PROT_WRITE) == 0, "mprotect_rw");
	p[0] = 1;

	q = mremap(p, n * page, 2 * n * page, MREMAP_MAYMOVE);
	check(q != MAP_FAILED && pattern_ok(q, 0, n), "mremap_grow");
	p = q;
	q = mremap(p, 2 * n * page, n * page, 0);
	check(q == p && pattern_ok(p, 0, n), "mremap_shrink");

	check(madvise(p, 16 * page, MADV_DONTNEED) == 0 && p[0] == 0 && p[15 * page] == 0 && pattern_ok(p, 16, n),
	      "madvise_dontneed");
	check(madvise(p + 16 * page, 16 * page, MADV_COLD) == 0 && pattern_ok(p, 16, n), "madvise_cold");
	check(madvise(p + 16 * page, 16 * page, MADV_PAGEOUT) == 0 && pattern_ok(p, 16, n), "madvise_pageout");

	child = fork();
	check(child >= 0, "fork");
	if (child == 0) {
		for (size_t i = 16; i < n; i++)
			p[i * page] = 0x55;	/* copy-on-write: the parent must not see this */
		_exit(0);
	}
	check(waitpid(child, &status, 0) == child && WIFEXITED(status) && pattern_ok(p, 16, n), "fork_cow");

	fd = open("/proc/sys/vm/compact_memory", O_WRONLY);
	check(fd >= 0 && write(fd, "1", 1) == 1 && close(fd) == 0 && pattern_ok(p, 16, n), "compaction");

	check(munmap(p + 32 * page, 16 * page) == 0 && pattern_ok(p, 16, 32) && pattern_ok(p, 48, n), "munmap_partial");
	check(munmap(p, 32 * page) == 0 && munmap(p + 48 * page, 16 * page) == 0, "munmap_rest");

	printf("{\"workload\":\"mm_smoke\",\"pid\":%d,\"checks\":[%s]}\n", getpid(), checks);
	return 0;
}
