/*
 * ev_mirror CASE ro|rw blind|context [--pages=N] [--iters=K] [--dir=D]: the evidence workloads.
 * The probe's model driver mirrors N pages of this process (docs/evidence.md); each of K iterations
 * does CASE's operation, then one device access (timed: a torn-down mirror re-faults), then a verify
 * (counts mirrored pages left at a stale frame).
 *   writeback   a shared mapping of a file in D (default /mnt/wb, ext2): write every page, msync
 *   softdirty   anonymous pages: clear_refs 4, write every page
 *   mprotect    anonymous pages: mprotect read-only, then read-write again
 *   fork        anonymous heap: fork a child that exits at once, wait for it, write every page
 *   fork-cow    the same, but the parent writes while the child lives: every page is copied
 *   dontneed    MADV_DONTNEED the pages, write them again (CLEAR: the VMA stays)
 *   munmap      munmap the pages, map them again at the same address, write them (UNMAP)
 *   compaction  N pages, 1 in 16 kept, then /proc/sys/vm/compact_memory; the mirror covers the first
 *               MIRROR_PAGES of them (the probe's cap) and is read-only (a write fault would fill holes)
 * Prints "mirror" (the probe's line for this mirror before exit), "access_cycles" (TSC cycles of the K
 * timed accesses) and "access_median_cycles" (of one access),
 * "frames_changed" (pages whose frame changed across the operations, from pagemap).
 */
#include "probe.h"

#include <sys/wait.h>
#include <x86intrin.h>

#define MIRROR_PAGES 4096	/* MIRROR_MAX_PAGES of the probe */

static int mirror_id;

static void mirror_op(const char *file)
{
	char path[96], buf[16];

	snprintf(path, sizeof(path), PROBE_DIR "/%s", file);
	snprintf(buf, sizeof(buf), "%d", mirror_id);
	if (write_file(path, buf))
		die(path);
}

/* The probe's line for our mirror ("" if none); the id is the one matching our pid and start. */
static void mirror_line(void *start, char *out, size_t size)
{
	char want[64], line[1024];
	FILE *f = fopen(PROBE_DIR "/mirror", "r");

	if (!f)
		die("open " PROBE_DIR "/mirror");
	snprintf(want, sizeof(want), " pid=%d start=0x%lx ", getpid(), (unsigned long)start);
	out[0] = '\0';
	while (fgets(line, sizeof(line), f))
		if (strstr(line, want)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(out, size, "%s", line);
			sscanf(line, "id=%d", &mirror_id);
		}
	fclose(f);
}

/* The guest's clock ticks in jiffies here (4 ms): the TSC resolves one access. */
static long long now_cycles(void)
{
	return (long long)__rdtsc();
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

static size_t count_changed(const uint64_t *a, const uint64_t *b, size_t n)
{
	size_t changed = 0;

	for (size_t i = 0; i < n; i++)
		if ((a[i] & (1ULL << 63)) && (a[i] & ((1ULL << 55) - 1)) != (b[i] & ((1ULL << 55) - 1)))
			changed++;
	return changed;
}

int main(int argc, char **argv)
{
	const char *kase = NULL, *perm = NULL, *mode = NULL, *dir = "/mnt/wb";
	size_t npages = 256, iters = 20, len, mlen, mpages, changed = 0;
	char path[256], buf[160], line[1024];
	uint64_t *before, *after;
	long long access_cycles = 0, *each;
	int fd = -1, npos = 0;
	char *p;

	setup(argc, argv);
	for (int i = 1; i < argc; i++) {
		if (sscanf(argv[i], "--pages=%zu", &npages) || sscanf(argv[i], "--iters=%zu", &iters))
			continue;
		if (!strncmp(argv[i], "--dir=", 6))
			dir = argv[i] + 6;
		else if (strncmp(argv[i], "--", 2))
			*(npos == 0 ? &kase : npos == 1 ? &perm : &mode) = argv[i], npos++;
	}
	if (npos != 3 || !npages)
		fail("usage: ev_mirror CASE ro|rw blind|context [--pages=N] [--iters=K] [--dir=D]");
	len = npages * page;
	if (!strcmp(kase, "writeback")) {
		snprintf(path, sizeof(path), "%s/ev-mirror-%d", dir, getpid());
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || ftruncate(fd, len))
			die("open/ftruncate");
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			die("mmap file");
		unlink(path);
	} else {
		p = map_isolated(len, PROT_READ | PROT_WRITE);
		if (madvise(p, len, MADV_NOHUGEPAGE))	/* small pages: frames per page, and no THP split */
			die("madvise NOHUGEPAGE");
	}
	if (!strcmp(kase, "compaction")) {
		touch(p, len, page);
		for (size_t i = 0; i < npages; i += 16)
			if (madvise(p + (i + 1) * page, 15 * page, MADV_DONTNEED))
				die("madvise DONTNEED");
	} else {
		touch(p, len, page);
	}
	mpages = npages < MIRROR_PAGES ? npages : MIRROR_PAGES;
	mlen = mpages * page;
	before = calloc(npages, sizeof(*before));
	after = calloc(npages, sizeof(*after));
	each = calloc(iters ? iters : 1, sizeof(*each));
	if (!before || !after || !each)
		die("calloc");

	snprintf(buf, sizeof(buf), "%d %lu %lu %s %s", getpid(), (unsigned long)p, (unsigned long)p + mlen, perm, mode);
	if (write_file(PROBE_DIR "/mirror", buf))
		die("write " PROBE_DIR "/mirror");
	mirror_line(p, line, sizeof(line));
	mirror_op("access");	/* the first fault, outside the timed loop */

	for (size_t it = 0; it < iters; it++) {
		pagemap_read(p, mpages, before);
		if (!strcmp(kase, "writeback")) {
			touch(p, len, page);
			if (msync(p, len, MS_SYNC))
				die("msync");
		} else if (!strcmp(kase, "softdirty")) {
			if (write_file("/proc/self/clear_refs", "4"))
				die("clear_refs");
			touch(p, len, page);
		} else if (!strcmp(kase, "mprotect")) {
			if (mprotect(p, len, PROT_READ) || mprotect(p, len, PROT_READ | PROT_WRITE))
				die("mprotect");
		} else if (!strcmp(kase, "fork") || !strcmp(kase, "fork-cow")) {
			int fds[2], status;
			pid_t child;
			char c;

			if (pipe(fds))
				die("pipe");
			fflush(stdout);
			child = fork();
			if (child < 0)
				die("fork");
			if (child == 0) {
				close(fds[1]);
				if (!strcmp(kase, "fork-cow") && read(fds[0], &c, 1) < 0)
					_exit(1);
				_exit(0);
			}
			close(fds[0]);
			if (!strcmp(kase, "fork") && waitpid(child, &status, 0) != child)
				die("waitpid");
			touch(p, len, page);
			close(fds[1]);
			if (!strcmp(kase, "fork-cow") && waitpid(child, &status, 0) != child)
				die("waitpid");
		} else if (!strcmp(kase, "dontneed")) {
			if (madvise(p, len, MADV_DONTNEED))
				die("madvise DONTNEED");
			touch(p, len, page);
		} else if (!strcmp(kase, "munmap")) {
			if (munmap(p, len))
				die("munmap");
			if (mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p)
				die("mmap fixed");
			touch(p, len, page);
		} else if (!strcmp(kase, "compaction")) {
			if (write_file("/proc/sys/vm/compact_memory", "1"))
				die("compact_memory");
		} else {
			fail("unknown case");
		}
		pagemap_read(p, mpages, after);
		changed += count_changed(before, after, mpages);
		long long t0 = now_cycles();
		mirror_op("access");
		each[it] = now_cycles() - t0;
		access_cycles += each[it];
		mirror_op("verify");
	}
	mirror_line(p, line, sizeof(line));
	add_range("target", p, len);
	add_range("mirror", p, mlen);
	json_begin("ev_mirror", kase);
	printf(",\"perm\":\"%s\",\"mode\":\"%s\",\"mirror\":\"%s\"", perm, mode, line);
	json_int("pages", npages);
	json_int("iters", iters);
	json_int("access_cycles", access_cycles);
	qsort(each, iters, sizeof(*each), cmp_ll);
	json_int("access_median_cycles", iters ? each[iters / 2] : 0);	/* robust to a loaded host */
	json_int("frames_changed", changed);
	json_end();
	if (fd >= 0)
		close(fd);
	return 0;
}
