/*
 * The evidence workloads (docs/evidence.md), once, for every device that mirrors them:
 * programs/ev_mirror.c (the probe's model driver, through debugfs) and kprograms/ev_hmm.c
 * (lib/test_hmm.c's device, /dev/hmm_dmirror0). The mapping, the per-iteration operation, the frame
 * bookkeeping and the timing live here; a program only says how its device attaches, accesses and
 * verifies.
 *
 * A run: map N pages (ev_map), mirror the first min(N, EV_MIRROR_PAGES) of them and fault them once
 * (the program's part), then K times (ev_loop): CASE's operation, one timed device access, one
 * untimed verify.
 *   writeback   a shared mapping of a file in D (default /mnt/wb, ext2): write every page, msync
 *   softdirty   anonymous pages: clear_refs 4, write every page
 *   mprotect    anonymous pages: mprotect read-only, then read-write again
 *   fork        anonymous heap: fork a child that exits at once, wait for it, write every page
 *   fork-cow    the same, but the parent writes while the child lives: every page is copied
 *   dontneed    MADV_DONTNEED the pages, write them again (CLEAR: the VMA stays)
 *   munmap      munmap the pages, map them again at the same address, write them (UNMAP)
 *   compaction  N pages, 1 in 16 kept, then /proc/sys/vm/compact_memory; the mirror covers the first
 *               EV_MIRROR_PAGES of them and is read-only (a write fault would fill holes)
 * ev_json_common prints "pages", "iters", "mirror_pages", "access_cycles" (TSC cycles of the K timed
 * accesses), "access_median_cycles" (of one access), "frames_changed" (mirrored pages whose frame
 * changed across the operations, from pagemap) and "changed_iters" (the iterations that changed one).
 */
#ifndef GUEST_EV_CASES_H
#define GUEST_EV_CASES_H

#include "probe.h"

#include <sys/wait.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#define EV_MIRROR_PAGES 4096	/* MIRROR_MAX_PAGES of the probe: every device mirrors the same range */
#define EV_MAX_POS 3

struct ev {
	const char *pos[EV_MAX_POS];	/* positional arguments: pos[0] is the case */
	const char *kase, *dir;
	size_t npages, iters, len;	/* the mapping */
	size_t mpages, mlen;		/* the mirrored part, from p */
	char *p;
	int fd;				/* the writeback file, or -1 */
	size_t frames_changed, changed_iters;
	long long access_cycles, access_median_cycles;
	unsigned int gen;		/* iterations so far: the byte the operations write */
};

/*
 * The writes of one iteration: each page's first byte becomes this iteration's value, so that a device
 * that kept an old frame (or missed a write) reads a byte the CPU no longer sees (ev_rxe's stale check;
 * the log-export scenario appends new bytes every time).
 */
static inline void ev_write(struct ev *ev, char *p, size_t len, long step)
{
	char value = (char)(1 + ev->gen % 250);

	for (size_t off = 0; off < len; off += step)
		p[off] = value;
}

/* CASE and npos-1 more positional arguments, --pages=N, --iters=K, --dir=D (other --options ignored). */
static inline void ev_args(struct ev *ev, int argc, char **argv, int npos, const char *usage)
{
	int n = 0;

	memset(ev, 0, sizeof(*ev));
	ev->dir = "/mnt/wb";
	ev->npages = 256;
	ev->iters = 20;
	ev->fd = -1;
	for (int i = 1; i < argc; i++) {
		if (sscanf(argv[i], "--pages=%zu", &ev->npages) || sscanf(argv[i], "--iters=%zu", &ev->iters))
			continue;
		if (!strncmp(argv[i], "--dir=", 6))
			ev->dir = argv[i] + 6;
		else if (strncmp(argv[i], "--", 2) && n++ < EV_MAX_POS)
			ev->pos[n - 1] = argv[i];
	}
	if (n != npos || !ev->npages)
		fail(usage);
	ev->kase = ev->pos[0];
}

/* The case's memory, every page present (compaction: 1 in 16), and the mirrored part of it. */
static inline void ev_map(struct ev *ev)
{
	char path[256];

	ev->len = ev->npages * page;
	if (!strcmp(ev->kase, "writeback")) {
		snprintf(path, sizeof(path), "%s/ev-mirror-%d", ev->dir, getpid());
		ev->fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (ev->fd < 0 || ftruncate(ev->fd, ev->len))
			die("open/ftruncate");
		ev->p = mmap(NULL, ev->len, PROT_READ | PROT_WRITE, MAP_SHARED, ev->fd, 0);
		if (ev->p == MAP_FAILED)
			die("mmap file");
		unlink(path);
	} else {
		ev->p = map_isolated(ev->len, PROT_READ | PROT_WRITE);
		if (madvise(ev->p, ev->len, MADV_NOHUGEPAGE))	/* small pages: frames per page, no THP split */
			die("madvise NOHUGEPAGE");
	}
	touch(ev->p, ev->len, page);
	if (!strcmp(ev->kase, "compaction"))
		for (size_t i = 0; i < ev->npages; i += 16)
			if (madvise(ev->p + (i + 1) * page, 15 * page, MADV_DONTNEED))
				die("madvise DONTNEED");
	ev->mpages = ev->npages < EV_MIRROR_PAGES ? ev->npages : EV_MIRROR_PAGES;
	ev->mlen = ev->mpages * page;
}

/* One iteration's operation on the process's side. */
static inline void ev_operation(struct ev *ev)
{
	const char *kase = ev->kase;
	char *p = ev->p;
	size_t len = ev->len;

	ev->gen++;

	if (!strcmp(kase, "writeback")) {
		ev_write(ev, p, len, page);
		if (msync(p, len, MS_SYNC))
			die("msync");
	} else if (!strcmp(kase, "softdirty")) {
		if (write_file("/proc/self/clear_refs", "4"))
			die("clear_refs");
		ev_write(ev, p, len, page);
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
		ev_write(ev, p, len, page);
		close(fds[1]);
		if (!strcmp(kase, "fork-cow") && waitpid(child, &status, 0) != child)
			die("waitpid");
	} else if (!strcmp(kase, "dontneed")) {
		if (madvise(p, len, MADV_DONTNEED))
			die("madvise DONTNEED");
		ev_write(ev, p, len, page);
	} else if (!strcmp(kase, "munmap")) {
		if (munmap(p, len))
			die("munmap");
		if (mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p)
			die("mmap fixed");
		ev_write(ev, p, len, page);
	} else if (!strcmp(kase, "compaction")) {
		if (write_file("/proc/sys/vm/compact_memory", "1"))
			die("compact_memory");
	} else {
		fail("unknown case");
	}
}

/* The guest's clock ticks in jiffies here (4 ms): the TSC resolves one access. */
static inline long long ev_cycles(void)
{
#if defined(__aarch64__)
	unsigned long long v;

	/* the generic timer's virtual count: CNTFRQ_EL0 = 62.5 MHz on QEMU virt (TCG) */
	__asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(v) :: "memory");
	return (long long)v;
#else
	return (long long)__rdtsc();
#endif
}

static inline int ev_cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return (x > y) - (x < y);
}

static inline size_t ev_count_changed(const uint64_t *a, const uint64_t *b, size_t n)
{
	size_t changed = 0;

	for (size_t i = 0; i < n; i++)
		if ((a[i] & (1ULL << 63)) && (a[i] & ((1ULL << 55) - 1)) != (b[i] & ((1ULL << 55) - 1)))
			changed++;
	return changed;
}

/* K iterations: the operation, one timed access(), one verify() (may be NULL), frames tracked. */
static inline void ev_loop(struct ev *ev, void (*access)(struct ev *), void (*verify)(struct ev *))
{
	uint64_t *before = calloc(ev->mpages, sizeof(*before)), *after = calloc(ev->mpages, sizeof(*after));
	long long *each = calloc(ev->iters ? ev->iters : 1, sizeof(*each));

	if (!before || !after || !each)
		die("calloc");
	for (size_t it = 0; it < ev->iters; it++) {
		pagemap_read(ev->p, ev->mpages, before);
		ev_operation(ev);
		pagemap_read(ev->p, ev->mpages, after);
		size_t changed = ev_count_changed(before, after, ev->mpages);

		ev->frames_changed += changed;
		ev->changed_iters += changed > 0;
		long long t0 = ev_cycles();
		access(ev);
		each[it] = ev_cycles() - t0;
		ev->access_cycles += each[it];
		if (verify)
			verify(ev);
	}
	qsort(each, ev->iters, sizeof(*each), ev_cmp_ll);
	ev->access_median_cycles = ev->iters ? each[ev->iters / 2] : 0;	/* robust to a loaded host */
	free(before);
	free(after);
	free(each);
}

/* What every evidence program reports, after json_begin(program, case) and its own fields. */
static inline void ev_json_common(struct ev *ev)
{
	add_range("target", ev->p, ev->len);
	add_range("mirror", ev->p, ev->mlen);
	json_int("pages", ev->npages);
	json_int("iters", ev->iters);
	json_int("mirror_pages", ev->mpages);
	json_int("access_cycles", ev->access_cycles);
	json_int("access_median_cycles", ev->access_median_cycles);
	json_int("frames_changed", ev->frames_changed);
	json_int("changed_iters", ev->changed_iters);
}

#endif
