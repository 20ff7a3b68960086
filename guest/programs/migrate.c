/*
 * migrate move_pages|mbind: move 16 touched anonymous pages to another NUMA node while the probe
 * watches this mm (needs two nodes, e.g. numa=fake=2).
 *   move_pages  move_pages(2) with every page's target node
 *   mbind       mbind(2) MPOL_BIND to the target node with MPOL_MF_MOVE
 * Prints "nodes_before"/"nodes_after" (each page's node), "target_node", "pagemap_before"/
 * "pagemap_after" and "seq_before"/"seq_after" (the probe's record count around the move).
 */
#include "probe.h"

#include <sys/syscall.h>

#define NPAGES 16
#define MPOL_BIND 2
#define MPOL_MF_STRICT 1
#define MPOL_MF_MOVE 2

static void nodes_of(char *p, int *nodes)
{
	void *pages[NPAGES];

	for (int i = 0; i < NPAGES; i++)
		pages[i] = p + i * page;
	if (syscall(SYS_move_pages, 0, NPAGES, pages, NULL, nodes, 0))
		die("move_pages (query)");
}

int main(int argc, char **argv)
{
	uint64_t before[NPAGES], after[NPAGES], nb[NPAGES], na[NPAGES];
	int nodes_before[NPAGES], nodes_after[NPAGES], target[NPAGES], status[NPAGES];
	long long seq_before, seq_after;
	size_t len = NPAGES;
	const char *kase;
	int to;
	char *p;

	setup(argc, argv);
	kase = case_arg(argc, argv, "");
	len = NPAGES * page;
	p = map_isolated(len, PROT_READ | PROT_WRITE);
	touch(p, len, page);
	nodes_of(p, nodes_before);
	to = nodes_before[0] == 0 ? 1 : 0;
	probe_watch_self(argc, argv);
	seq_before = probe_recorded();
	pagemap_read(p, NPAGES, before);
	if (!strcmp(kase, "move_pages")) {
		void *pages[NPAGES];

		for (int i = 0; i < NPAGES; i++) {
			pages[i] = p + i * page;
			target[i] = to;
		}
		if (syscall(SYS_move_pages, 0, NPAGES, pages, target, status, MPOL_MF_MOVE))
			die("move_pages");
	} else if (!strcmp(kase, "mbind")) {
		unsigned long mask = 1UL << to;

		if (syscall(SYS_mbind, p, len, MPOL_BIND, &mask, sizeof(mask) * 8, MPOL_MF_MOVE | MPOL_MF_STRICT))
			die("mbind");
	} else {
		fail("usage: migrate move_pages|mbind [--no-probe]");
	}
	pagemap_read(p, NPAGES, after);
	seq_after = probe_recorded();
	nodes_of(p, nodes_after);
	for (int i = 0; i < NPAGES; i++) {
		nb[i] = nodes_before[i];
		na[i] = nodes_after[i];
	}
	add_range("target", p, len);
	json_begin("migrate", kase);
	json_int("target_node", to);
	json_int("seq_before", seq_before);
	json_int("seq_after", seq_after);
	json_u64s("nodes_before", nb, NPAGES);
	json_u64s("nodes_after", na, NPAGES);
	json_u64s("pagemap_before", before, NPAGES);
	json_u64s("pagemap_after", after, NPAGES);
	json_end();
	return 0;
}
