/* What every guest workload shares: subscribing the mmu_probe module to its own mm, and JSON output. */
#ifndef GUEST_PROBE_H
#define GUEST_PROBE_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROBE_WATCH "/sys/kernel/debug/mmu_probe/watch"

static inline void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(1);
}

/* Subscribe the probe to this process's mm; with --no-probe (or no module) run unobserved. */
static inline int probe_watch_self(int argc, char **argv)
{
	char buf[32];
	int fd, n;

	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--no-probe"))
			return 0;
	fd = open(PROBE_WATCH, O_WRONLY);
	if (fd < 0)
		die("open " PROBE_WATCH);
	n = snprintf(buf, sizeof(buf), "%d", getpid());
	if (write(fd, buf, n) != n)
		die("write " PROBE_WATCH);
	close(fd);
	return 1;
}

static inline void touch(char *p, size_t len, long page)
{
	for (size_t off = 0; off < len; off += page)
		p[off] = 1;
}

#endif
