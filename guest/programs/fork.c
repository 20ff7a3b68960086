/*
 * fork private|shared: fork while the probe watches this (the parent's) mm, then write every page of
 * 16 touched pages in the parent while the child still lives, then let the child exit.
 *   private  MAP_PRIVATE anonymous memory: fork write-protects it (copy-on-write), writes copy
 *   shared   MAP_SHARED anonymous memory: nothing to copy, nothing to protect
 * Prints "child". Ranges: "target" (the 16 pages, exactly one VMA).
 */
#include "probe.h"

#include <sys/wait.h>

int main(int argc, char **argv)
{
	int fds[2], status;
	const char *kase;
	size_t len;
	pid_t child;
	char *p, c;

	setup(argc, argv);
	kase = case_arg(argc, argv, "private");
	len = 16 * page;
	if (!strcmp(kase, "private")) {
		p = map_isolated(len, PROT_READ | PROT_WRITE);
	} else if (!strcmp(kase, "shared")) {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			die("mmap shared");
	} else {
		fail("usage: fork private|shared [--no-probe]");
	}
	touch(p, len, page);
	if (pipe(fds))
		die("pipe");
	probe_watch_self(argc, argv);
	fflush(stdout);
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(fds[1]);
		/* Hold the pages shared until the parent wrote them all. */
		if (read(fds[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(fds[0]);
	for (size_t off = 0; off < len; off += page)
		p[off] = 2;
	close(fds[1]);
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("child failed");
	add_range("target", p, len);
	json_begin("fork", kase);
	json_int("child", child);
	json_end();
	return 0;
}
