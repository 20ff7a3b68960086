/*
 * guard CASE: guard regions (MADV_GUARD_INSTALL/REMOVE, Linux >= 6.13) on pages [4, 12) of 16 private
 * anonymous pages while the probe watches this mm. The other pages are touched in every case.
 *   populated  the target is touched, then guarded
 *   untouched  the target was never touched, then guarded
 *   partial    only pages [8, 12) of the target are touched, then the whole target is guarded
 *   remove     the target is touched and guarded before the probe watches; then the guards are removed
 * After the advice it reads every target page once and prints "guarded": how many faulted (SIGSEGV).
 * Ranges: "target" (the advised range), "rest"/"rest_hi" (the other pages of the mapping).
 * A kernel without guard regions answers EINVAL: the program says so and exits 1.
 */
#include "probe.h"

#include <setjmp.h>
#include <signal.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_GUARD_REMOVE
#define MADV_GUARD_REMOVE 103
#endif

static sigjmp_buf fault_jump;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(fault_jump, 1);
}

/* Pages of [p, p + n pages) whose read faults: a guard marker makes every access SIGSEGV. */
static long count_guarded(volatile char *p, size_t n)
{
	struct sigaction sa = { .sa_handler = on_segv }, old;
	volatile long guarded = 0;	/* kept across siglongjmp */

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &old))
		die("sigaction");
	for (size_t i = 0; i < n; i++) {
		if (sigsetjmp(fault_jump, 1)) {
			guarded++;
			continue;
		}
		(void)p[i * page];	/* a read of an unguarded page maps the zero page: no invalidation */
	}
	if (sigaction(SIGSEGV, &old, NULL))
		die("sigaction restore");
	return guarded;
}

static void guard(char *p, size_t len, int advice, const char *name)
{
	if (!madvise(p, len, advice))
		return;
	if (errno == EINVAL)
		fprintf(stderr, "madvise %s: EINVAL: this kernel has no guard regions (Linux >= 6.13)\n", name);
	else
		fprintf(stderr, "madvise %s: %s\n", name, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	const char *kase;
	char *p, *t;

	setup(argc, argv);
	kase = case_arg(argc, argv, "");
	p = map_isolated(16 * page, PROT_READ | PROT_WRITE);
	t = p + 4 * page;
	touch(p, 4 * page, page);
	touch(p + 12 * page, 4 * page, page);
	if (!strcmp(kase, "populated") || !strcmp(kase, "remove"))
		touch(t, 8 * page, page);
	else if (!strcmp(kase, "partial"))
		touch(t + 4 * page, 4 * page, page);
	else if (strcmp(kase, "untouched"))
		fail("usage: guard populated|untouched|partial|remove [--no-probe]");
	if (!strcmp(kase, "remove")) {
		guard(t, 8 * page, MADV_GUARD_INSTALL, "GUARD_INSTALL");
		probe_watch_self(argc, argv);
		guard(t, 8 * page, MADV_GUARD_REMOVE, "GUARD_REMOVE");
	} else {
		probe_watch_self(argc, argv);
		guard(t, 8 * page, MADV_GUARD_INSTALL, "GUARD_INSTALL");
	}
	add_range("target", t, 8 * page);
	add_range("rest", p, 4 * page);
	add_range("rest_hi", p + 12 * page, 4 * page);
	json_begin("guard", kase);
	json_int("guarded", count_guarded(t, 8));
	json_end();
	return 0;
}
