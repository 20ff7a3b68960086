/*
 * madvise CASE [--wait=SECONDS]: give advice about memory while the probe watches this mm.
 *   dontneed, free, cold  MADV_DONTNEED/FREE/COLD on pages [4, 12) of 16 touched anonymous pages
 *   pageout               MADV_PAGEOUT on 16 touched anonymous pages (needs swap to unmap them);
 *                         prints "pagemap" after it and "swapped", the pages now in swap
 *   remove                MADV_REMOVE on pages [4, 12) of a 16-page shared shmem (memfd) mapping
 *   mergeable             MADV_MERGEABLE on 32 identical pages, then waits (default 30 s) until KSM
 *                         (/sys/kernel/mm/ksm/run=1, set by the caller) merged them all; prints
 *                         "pagemap_before", "pagemap_after", "merged", "seq_before", "seq_after"
 *   collapse              MADV_COLLAPSE on a 2 MiB-aligned region populated with 4 KiB pages
 * Ranges: "target" (the advised range), "rest"/"rest_hi" (the other pages of the mapping).
 */
#include "probe.h"

#include <time.h>

#ifndef MADV_COLD
#define MADV_COLD 20
#endif
#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define KSM_PAGES 32

static long ksm_merging_pages(void)
{
	long n = -1;
	FILE *f = fopen("/proc/self/ksm_merging_pages", "r");

	if (!f)
		die("open /proc/self/ksm_merging_pages");
	if (fscanf(f, "%ld", &n) != 1)
		fail("cannot read /proc/self/ksm_merging_pages");
	fclose(f);
	return n;
}

static void mergeable(int argc, char **argv, int wait_s)
{
	static uint64_t before[KSM_PAGES], after[KSM_PAGES];
	size_t len = KSM_PAGES * page;
	char *p = map_isolated(len, PROT_READ | PROT_WRITE);
	long long seq_before, seq_after;
	long merged = 0;
	time_t deadline;

	memset(p, 0x5a, len);	/* identical, and not zero (zero pages are merged differently) */
	probe_watch_self(argc, argv);
	seq_before = probe_recorded();
	pagemap_read(p, KSM_PAGES, before);
	if (madvise(p, len, MADV_MERGEABLE))
		die("madvise MERGEABLE");
	deadline = time(NULL) + wait_s;
	while ((merged = ksm_merging_pages()) < KSM_PAGES && time(NULL) < deadline)
		usleep(50000);
	pagemap_read(p, KSM_PAGES, after);
	seq_after = probe_recorded();
	add_range("target", p, len);
	json_begin("madvise", "mergeable");
	json_int("merged", merged);
	json_int("seq_before", seq_before);
	json_int("seq_after", seq_after);
	json_u64s("pagemap_before", before, KSM_PAGES);
	json_u64s("pagemap_after", after, KSM_PAGES);
	json_end();
}

/*
 * 512 small pages under one PMD: faulted in while the VMA is too small for a huge page, then the VMA
 * grows to exactly 2 MiB. khugepaged may collapse it as soon as it is eligible, so the probe watches
 * before that: whoever collapses it, one collapse is seen.
 */
static void collapse(int argc, char **argv)
{
	char *p = map_isolated(PMD_SIZE - page, PROT_READ | PROT_WRITE);
	char *last = p + PMD_SIZE - page;

	touch(p, PMD_SIZE - page, page);
	if (munmap(last, page))	/* a hole in the guard above, to grow into without unmapping anything */
		die("munmap guard");
	probe_watch_self(argc, argv);
	if (mmap(last, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != last)
		die("mmap last page");	/* merges with the VMA below: one VMA of exactly 2 MiB */
	touch(last, page, page);
	if (madvise(p, PMD_SIZE, MADV_COLLAPSE))
		die("madvise COLLAPSE");
	add_range("target", p, PMD_SIZE);
	json_begin("madvise", "collapse");
	json_end();
}

int main(int argc, char **argv)
{
	size_t len, n;
	const char *kase;
	int advice, wait_s = 30;
	char *p;

	setup(argc, argv);
	kase = case_arg(argc, argv, "");
	for (int i = 1; i < argc; i++)
		sscanf(argv[i], "--wait=%d", &wait_s);
	if (!strcmp(kase, "mergeable")) {
		mergeable(argc, argv, wait_s);
		return 0;
	}
	if (!strcmp(kase, "collapse")) {
		collapse(argc, argv);
		return 0;
	}
	len = 16 * page;
	if (!strcmp(kase, "remove")) {
		int fd = memfd_create("madvise-remove", 0);

		if (fd < 0)
			die("memfd_create");
		if (ftruncate(fd, len))
			die("ftruncate");
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			die("mmap shmem");
	} else {
		p = map_isolated(len, PROT_READ | PROT_WRITE);
	}
	touch(p, len, page);
	if (!strcmp(kase, "dontneed"))
		advice = MADV_DONTNEED;
	else if (!strcmp(kase, "free"))
		advice = MADV_FREE;
	else if (!strcmp(kase, "cold"))
		advice = MADV_COLD;
	else if (!strcmp(kase, "remove"))
		advice = MADV_REMOVE;
	else if (!strcmp(kase, "pageout"))
		advice = MADV_PAGEOUT;
	else
		fail("usage: madvise dontneed|free|pageout|cold|remove|mergeable|collapse [--wait=S] [--no-probe]");
	probe_watch_self(argc, argv);
	if (advice == MADV_PAGEOUT) {
		static uint64_t pm[16];
		long swapped = 0;

		if (madvise(p, len, advice))
			die("madvise PAGEOUT");
		pagemap_read(p, 16, pm);
		for (n = 0; n < 16; n++)
			swapped += (pm[n] >> 62) & 1;
		add_range("target", p, len);
		json_begin("madvise", kase);
		json_int("swapped", swapped);
		json_u64s("pagemap", pm, 16);
		json_end();
		return 0;
	}
	if (madvise(p + 4 * page, 8 * page, advice))
		die("madvise");
	add_range("target", p + 4 * page, 8 * page);
	add_range("rest", p, 4 * page);
	add_range("rest_hi", p + 12 * page, 4 * page);
	json_begin("madvise", kase);
	json_end();
	return 0;
}
