/*
 * mprotect CASE: change the protection of anonymous memory while the probe watches this mm.
 *   rw-ro        pages [4, 12) of 16 touched RW pages become read-only (the VMA splits in three)
 *   ro-rw        16 touched pages, made read-only beforehand, become writable
 *   none         16 touched RW pages become PROT_NONE
 *   unpop-pmd    16 never-touched RW pages become read-only; a page in the same 2 MiB (same page
 *                table) is populated, so the PMD entry is present
 *   unpop-pud    the same, but the populated page is 4 MiB away: same 1 GiB (PUD entry present),
 *                no page table under the target's PMD entry
 *   unpop-empty  the same with nothing populated in the target's 1 GiB
 * Ranges: "target" (what mprotect was given), "rest" (rw-ro: the pages around it), "neighbour".
 */
#include "probe.h"

#define PUD_SIZE (1UL << 30)

/* A 1 GiB-aligned stretch of address space nothing else can map into (PROT_NONE, no reserve). */
static char *reserve_pud(void)
{
	char *r = mmap(NULL, 2 * PUD_SIZE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (r == MAP_FAILED)
		die("mmap reserve");
	return (char *)(((unsigned long)r + PUD_SIZE - 1) & ~(PUD_SIZE - 1));
}

int main(int argc, char **argv)
{
	const char *kase;
	size_t len;
	int prot = PROT_READ;
	char *p, *t;

	setup(argc, argv);
	kase = case_arg(argc, argv, "");
	len = 16 * page;
	if (!strncmp(kase, "unpop-", 6)) {
		char *n = NULL;

		p = t = reserve_pud();
		if (mprotect(p, len, PROT_READ | PROT_WRITE))
			die("mprotect target");
		if (!strcmp(kase, "unpop-pmd"))
			n = p + 32 * page;
		else if (!strcmp(kase, "unpop-pud"))
			n = p + 2 * PMD_SIZE;
		else if (strcmp(kase, "unpop-empty"))
			fail("unknown case");
		if (n) {
			if (mprotect(n, page, PROT_READ | PROT_WRITE))
				die("mprotect neighbour");
			touch(n, page, page);
			add_range("neighbour", n, page);
		}
	} else {
		p = t = map_isolated(len, PROT_READ | PROT_WRITE);
		touch(p, len, page);
		if (!strcmp(kase, "rw-ro")) {
			t = p + 4 * page;
			len = 8 * page;
			add_range("rest", p, 4 * page);
			add_range("rest_hi", p + 12 * page, 4 * page);
		} else if (!strcmp(kase, "ro-rw")) {
			if (mprotect(p, len, PROT_READ))
				die("mprotect ro");
			prot = PROT_READ | PROT_WRITE;
		} else if (!strcmp(kase, "none")) {
			prot = PROT_NONE;
		} else {
			fail("usage: mprotect rw-ro|ro-rw|none|unpop-pmd|unpop-pud|unpop-empty [--no-probe]");
		}
	}
	probe_watch_self(argc, argv);
	if (mprotect(t, len, prot))
		die("mprotect");
	add_range("target", t, len);
	json_begin("mprotect", kase);
	json_end();
	return 0;
}
