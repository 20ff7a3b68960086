/*
 * mremap CASE: move or resize 16 touched anonymous pages while the probe watches this mm.
 *   move       grow to 32 pages where the next page is taken (a guard): the kernel must move it
 *   fixed      MREMAP_FIXED onto another mapped, touched 16-page region
 *   shrink     to 8 pages in place
 *   grow       to 32 pages in place (the 16 pages after it are free)
 *   dontunmap  MREMAP_DONTUNMAP: the pages move, the old range stays mapped (empty)
 * Ranges: "old" (the source), "new" (where it ended up: the destination of a move, or the pages
 * added by grow), "kept" and "target" for shrink (the pages kept, the pages cut off).
 */
#include "probe.h"

#include <sys/syscall.h>

#ifndef MREMAP_DONTUNMAP
#define MREMAP_DONTUNMAP 4
#endif

int main(int argc, char **argv)
{
	const char *kase;
	size_t len;
	char *p, *q = NULL, *n;

	setup(argc, argv);
	kase = case_arg(argc, argv, "");
	len = 16 * page;
	p = map_isolated(len, PROT_READ | PROT_WRITE);
	touch(p, len, page);
	if (!strcmp(kase, "fixed")) {
		q = map_isolated(len, PROT_READ | PROT_WRITE);
		touch(q, len, page);
	} else if (!strcmp(kase, "grow")) {
		if (munmap(p + len, len))	/* free the guard after it, so that it can grow in place */
			die("munmap guard");
	}
	probe_watch_self(argc, argv);
	if (!strcmp(kase, "move")) {
		n = mremap(p, len, 2 * len, MREMAP_MAYMOVE);
		if (n == MAP_FAILED)
			die("mremap");
		if (n == p)
			fail("mremap moved nothing");
		add_range("old", p, len);
		add_range("new", n, 2 * len);
	} else if (!strcmp(kase, "fixed")) {
		n = mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, q);
		if (n != q)
			die("mremap fixed");
		add_range("old", p, len);
		add_range("new", n, len);
	} else if (!strcmp(kase, "shrink")) {
		if (mremap(p, len, len / 2, 0) != p)
			die("mremap shrink");
		add_range("kept", p, len / 2);
		add_range("target", p + len / 2, len / 2);
	} else if (!strcmp(kase, "grow")) {
		if (mremap(p, len, 2 * len, 0) != p)
			die("mremap grow");
		add_range("old", p, len);
		add_range("new", p + len, len);
	} else if (!strcmp(kase, "dontunmap")) {
		/* The raw call: glibc passes new_address to the kernel only with MREMAP_FIXED. */
		n = (char *)syscall(SYS_mremap, p, len, len, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
		if (n == MAP_FAILED)
			die("mremap dontunmap");
		add_range("old", p, len);
		add_range("new", n, len);
	} else {
		fail("usage: mremap move|fixed|shrink|grow|dontunmap [--no-probe]");
	}
	json_begin("mremap", kase);
	json_end();
	return 0;
}
