/*
 * The race workloads (race.c against the probe's model mirror, ../kprograms/race_hmm.c against
 * lib/test_hmm.c's device): a "device" thread pinned to one CPU accesses a range over and over while a
 * thread pinned to another CPU runs K operations of CASE on it per round:
 *   munmap      munmap the range, mmap it again at the same address, write every page (UNMAP)
 *   mprotect    mprotect PROT_READ, then PROT_READ|PROT_WRITE (PROTECTION_VMA; frames stay)
 *   dontneed    MADV_DONTNEED the range, write every page (CLEAR; new frames)
 *   migrate     move_pages(2) every page to the other NUMA node (needs two nodes): CLEAR per page from
 *               mm/rmap.c:try_to_migrate_one; MIGRATE is only device migration's (mm/migrate_device.c)
 *   compaction  over 32768 pages of which 1 in 16 is kept (another 1 each time: the holes are written,
 *               then dropped again), write /proc/sys/vm/compact_memory (the kernel picks what moves;
 *               CLEAR per moved page, try_to_migrate_one again)
 *   fork-cow    fork a child that waits, write every page while it lives (PROTECTION_PAGE, then CLEAR
 *               per copied page), let it exit
 * After each round (both threads quiet) the device accesses and verifies once more. R rounds, or fewer
 * if S seconds pass. Every write gives the pages new bytes, so a device that reads an old frame reads
 * old bytes.
 *
 * The includer defines the device: device_setup(pos) (after the range is mapped and filled; pos: the
 * positional arguments), device_access() and device_verify(quiet) (0 or an errno; EFAULT: nothing
 * mapped there, EBUSY: verify gave up because the range kept changing), device_json() (its fields of
 * the summary), and calls race_main(). Common fields of the summary: rounds, ops, accesses,
 * access_errors, access_busy, verify_busy, cpus (the CPU each thread ran on), elapsed_ms, and the range "mirror".
 */
#ifndef GUEST_RACE_H
#define GUEST_RACE_H

#include "probe.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#define MPOL_MF_MOVE (1 << 1)

static const char *kase;
static char *p;			/* the range */
static size_t npages, len, mpages;	/* mapped pages, bytes, pages the device uses */
static int rounds = 20, ops = 50, seconds = 12;	/* a few hundred retries per case under TCG (2026-11-28) */
static atomic_int go, stop;	/* the mutator's round: started by the device, stopped when done */
static int cpu_dev = -1, cpu_mut = -1, seen_dev = -1, seen_mut = -1;
static long long accesses, access_errors, access_busy, verify_busy, ops_done;
static unsigned char gen;	/* bumped by every fill: new bytes each time */

static void device_setup(const char **pos);
static int device_access(void);
static int device_verify(int quiet);
static void device_json(void);

static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))	/* 0: the calling thread */
		die("sched_setaffinity");
}

static void fill(void)
{
	gen++;
	for (size_t i = 0; i < npages; i++)
		p[i * page] = (char)(gen + i);
}

/* Every page written (the holes get new frames), then all but 1 in 16 dropped, a different 1 each time. */
static void fragment(void)
{
	static size_t keep = 15;

	keep = (keep + 1) % 16;
	fill();
	for (size_t i = 0; i < npages; i++)
		if (i % 16 != keep && madvise(p + i * page, page, MADV_DONTNEED))
			die("madvise");
}

/* The pages of what a device read (buf, mpages pages) that differ from what the CPU reads now. */
static inline long long pages_differing(const char *buf)
{
	long long n = 0;

	for (size_t i = 0; i < mpages; i++)
		n += !!memcmp(buf + i * page, p + i * page, page);
	return n;
}

static void device_round(int quiet)
{
	int err = device_access();

	accesses++;
	if (err == EFAULT)	/* between munmap and mmap: nothing to map; the mirror stays torn down */
		access_errors++;
	else if (err == EBUSY)	/* the device's fault gave up: the range kept changing (test_hmm: after 1 s) */
		access_busy++;
	else if (err)
		die("device access");
	err = device_verify(quiet);
	if (err == EBUSY)
		verify_busy++;
	else if (err && !(err == EFAULT && !quiet))
		die("device verify");
}

static void mutate_once(void)
{
	if (!strcmp(kase, "munmap")) {
		if (munmap(p, len))
			die("munmap");
		if (mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != p)
			die("mmap again");	/* the hole is between our own guards: nobody else maps there */
		fill();
	} else if (!strcmp(kase, "mprotect")) {
		if (mprotect(p, len, PROT_READ) || mprotect(p, len, PROT_READ | PROT_WRITE))
			die("mprotect");
	} else if (!strcmp(kase, "dontneed")) {
		if (madvise(p, len, MADV_DONTNEED))
			die("madvise");
		fill();
	} else if (!strcmp(kase, "migrate")) {
		static void *pages[4096];
		static int nodes[4096], status[4096];
		static int to = 1;

		for (size_t i = 0; i < mpages; i++) {
			pages[i] = p + i * page;
			nodes[i] = to;
		}
		if (syscall(SYS_move_pages, 0, mpages, pages, nodes, status, MPOL_MF_MOVE) < 0)
			die("move_pages");
		to ^= 1;
	} else if (!strcmp(kase, "compaction")) {
		/* Fresh pages, another 1 in 16 kept: what the last compaction packed is scattered again. */
		fragment();
		if (write_file("/proc/sys/vm/compact_memory", "1"))
			die("write /proc/sys/vm/compact_memory");
	} else if (!strcmp(kase, "fork-cow")) {
		int fds[2];
		pid_t child;
		char c = 0;

		if (pipe(fds))
			die("pipe");
		child = fork();
		if (child < 0)
			die("fork");
		if (!child) {	/* keeps the pages shared until the parent has written them all */
			close(fds[1]);
			while (read(fds[0], &c, 1) < 0 && errno == EINTR)
				;
			_exit(0);
		}
		close(fds[0]);
		for (size_t i = 0; i < mpages; i++)
			p[i * page]++;
		close(fds[1]);
		if (waitpid(child, NULL, 0) != child)
			die("waitpid");
	} else {
		fail("unknown case");
	}
}

static void *mutator(void *arg)
{
	(void)arg;
	pin(cpu_mut);
	seen_mut = sched_getcpu();
	for (;;) {
		while (!atomic_load(&go)) {
			if (atomic_load(&stop))
				return NULL;
			sched_yield();
		}
		for (int i = 0; i < ops; i++, ops_done++)
			mutate_once();
		atomic_store(&go, 0);
	}
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* argv: CASE, then npos - 1 more positional arguments (the device's), and the options. */
static int race_main(int argc, char **argv, const char **pos, int npos, const char *usage)
{
	int got = 0, done = 0;
	size_t pages_arg = 64;
	cpu_set_t online;
	pthread_t thread;
	long long t0;

	page = sysconf(_SC_PAGESIZE);
	for (int i = 1; i < argc; i++) {
		if (sscanf(argv[i], "--pages=%zu", &pages_arg) == 1 || sscanf(argv[i], "--rounds=%d", &rounds) == 1 ||
		    sscanf(argv[i], "--ops=%d", &ops) == 1 || sscanf(argv[i], "--seconds=%d", &seconds) == 1)
			continue;
		if (!strcmp(argv[i], "--no-probe"))
			continue;	/* read by probe_watch_self() */
		if (!strncmp(argv[i], "--", 2) || got == npos)
			fail(usage);
		pos[got++] = argv[i];
	}
	if (got != npos)
		fail(usage);
	kase = pos[0];

	/* Two different CPUs, or there is no race to speak of. */
	if (sched_getaffinity(0, sizeof(online), &online))
		die("sched_getaffinity");
	for (int c = 0; c < CPU_SETSIZE && cpu_mut < 0; c++)
		if (CPU_ISSET(c, &online)) {
			if (cpu_dev < 0)
				cpu_dev = c;
			else
				cpu_mut = c;
		}
	if (cpu_mut < 0)
		fail("race needs two online CPUs");
	pin(cpu_dev);
	seen_dev = sched_getcpu();

	npages = pages_arg;
	if (!strcmp(kase, "compaction")) {
		/* 1 page in 16 kept over 128 MiB: partly used pageblocks that compaction empties (evidence's) */
		npages = pages_arg < 4096 ? 32768 : pages_arg;
	}
	mpages = npages < 4096 ? npages : 4096;
	len = npages * page;
	p = map_isolated(len, PROT_READ | PROT_WRITE);
	if (!strcmp(kase, "compaction"))
		fragment();
	else
		fill();
	probe_watch_self(argc, argv);
	device_setup(pos);
	if (pthread_create(&thread, NULL, mutator, NULL))
		fail("pthread_create");

	t0 = now_ms();
	while (done < rounds && now_ms() - t0 < seconds * 1000LL) {
		atomic_store(&go, 1);
		while (atomic_load(&go))	/* the device faults while the other CPU changes the range */
			device_round(0);
		device_round(1);		/* and once with both quiet */
		done++;
	}
	atomic_store(&stop, 1);
	pthread_join(thread, NULL);

	json_begin("race", kase);
	device_json();
	json_int("rounds", done);
	json_int("ops", ops_done);
	json_int("accesses", accesses);
	json_int("access_errors", access_errors);
	json_int("access_busy", access_busy);
	json_int("verify_busy", verify_busy);
	json_int("elapsed_ms", now_ms() - t0);
	printf(",\"cpus\":[%d,%d]", seen_dev, seen_mut);
	add_range("mirror", p, mpages * page);
	json_end();
	return 0;
}

#endif
