/*
 * munmap: map an anonymous region, fault every page in, have the probe watch this mm, unmap it.
 * Prints {"workload":"munmap","pid":..,"page_size":..,"start":..,"end":..,"probed":0|1} on stdout;
 * start/end are the unmapped range [start, end).
 */
#include <sys/mman.h>

#include "probe.h"

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t len = 16 * page;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap");
	touch(p, len, page);
	int probed = probe_watch_self(argc, argv);
	if (munmap(p, len))
		die("munmap");
	printf("{\"workload\":\"munmap\",\"pid\":%d,\"page_size\":%ld,\"start\":%lu,\"end\":%lu,\"probed\":%d}\n",
	       getpid(), page, (unsigned long)p, (unsigned long)p + len, probed);
	return 0;
}
