/*
 * writeback msync|fsync [DIR]: dirty 16 pages of a shared file mapping in DIR (default /tmp), then,
 * while the probe watches this mm, write them back with msync(MS_SYNC) or fsync(2).
 * Prints "fs_magic" (statfs f_type of DIR). Ranges: "target" (the mapping).
 */
#include "probe.h"

#include <sys/vfs.h>

int main(int argc, char **argv)
{
	const char *kase, *dir = "/tmp";
	char path[256];
	struct statfs sfs;
	int fd, nargs = 0;
	size_t len;
	char *p;

	setup(argc, argv);
	kase = case_arg(argc, argv, "");
	for (int i = 1; i < argc; i++)
		if (strncmp(argv[i], "--", 2) && nargs++ == 1)
			dir = argv[i];
	if (strcmp(kase, "msync") && strcmp(kase, "fsync"))
		fail("usage: writeback msync|fsync [DIR] [--no-probe]");
	len = 16 * page;
	snprintf(path, sizeof(path), "%s/writeback-%d", dir, getpid());
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		die("open");
	if (ftruncate(fd, len))
		die("ftruncate");
	if (statfs(dir, &sfs))
		die("statfs");
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	touch(p, len, page);
	probe_watch_self(argc, argv);
	if (!strcmp(kase, "msync") ? msync(p, len, MS_SYNC) : fsync(fd))
		die(kase);
	add_range("target", p, len);
	json_begin("writeback", kase);
	json_int("fs_magic", (long long)sfs.f_type);
	json_end();
	unlink(path);
	return 0;
}
