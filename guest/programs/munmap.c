/*
 * munmap [whole|partial|span|untouched]: unmap anonymous memory while the probe watches this mm.
 *   whole      16 touched pages, all unmapped
 *   partial    pages [4, 8) of 16 touched pages
 *   span       [4, 20) of 24 pages that form two VMAs (RW, RO) with a hole at [8, 12)
 *   untouched  16 pages never faulted in
 * Ranges: "target" is what munmap was given; "rest" the mapped pages left (partial, span). The
 * top-level start/end repeat "target" for older callers.
 */
#include "probe.h"

int main(int argc, char **argv)
{
	const char *kase;
	size_t len;
	char *p, *t;

	setup(argc, argv);
	kase = case_arg(argc, argv, "whole");
	len = (strcmp(kase, "span") ? 16 : 24) * page;
	p = map_isolated(len, PROT_READ | PROT_WRITE);
	t = p;
	if (strcmp(kase, "untouched"))
		touch(p, len, page);
	if (!strcmp(kase, "whole") || !strcmp(kase, "untouched")) {
		len = 16 * page;
	} else if (!strcmp(kase, "partial")) {
		t = p + 4 * page;
		len = 4 * page;
		add_range("rest", p, 4 * page);
		add_range("rest_hi", p + 8 * page, 8 * page);
	} else if (!strcmp(kase, "span")) {
		if (munmap(p + 8 * page, 4 * page))
			die("munmap hole");
		if (mprotect(p + 12 * page, 12 * page, PROT_READ))
			die("mprotect");
		t = p + 4 * page;
		len = 16 * page;
		add_range("rest", p, 4 * page);
		add_range("rest_hi", p + 20 * page, 4 * page);
	} else {
		fail("usage: munmap [whole|partial|span|untouched] [--no-probe]");
	}
	probe_watch_self(argc, argv);
	if (munmap(t, len))
		die("munmap");
	add_range("target", t, len);
	json_begin("munmap", kase);
	json_int("start", (long long)(unsigned long)t);
	json_int("end", (long long)((unsigned long)t + len));
	json_end();
	return 0;
}
