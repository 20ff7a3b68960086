/*
 * A program the harness knows nothing about, for tests/test_trace.py (built static there): it maps
 * and unmaps memory in a constructor, before main, then write-protects memory in main, prints the
 * ranges and its arguments, and exits with status 3.
 */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

static unsigned long early_start, early_end;

__attribute__((constructor)) static void early(void)
{
	long page = sysconf(_SC_PAGESIZE);
	char *p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return;
	p[0] = 1;
	munmap(p, 4 * page);
	early_start = (unsigned long)p;
	early_end = early_start + 4 * page;
}

int main(int argc, char **argv)
{
	long page = sysconf(_SC_PAGESIZE);
	char *q = mmap(NULL, 8 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (q == MAP_FAILED)
		return 1;
	for (int i = 0; i < 8; i++)
		q[i * page] = 1;
	if (mprotect(q, 8 * page, PROT_READ))
		return 1;
	printf("early %lu %lu\n", early_start, early_end);
	printf("late %lu %lu\n", (unsigned long)q, (unsigned long)q + 8 * page);
	for (int i = 1; i < argc; i++)
		printf("arg %s\n", argv[i]);
	return 3;
}
