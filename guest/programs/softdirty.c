/*
 * softdirty: clear the soft-dirty bits of this mm (write 4 to /proc/self/clear_refs) while the probe
 * watches it, then write to pages [0, 8) of 16 touched anonymous pages again.
 * Prints "pagemap" after the writes (bit 55: soft-dirty). Ranges: "target" (all 16 pages),
 * "rewritten" (the 8 written after clearing).
 */
#include "probe.h"

int main(int argc, char **argv)
{
	uint64_t pm[16];
	size_t len;
	char *p;

	setup(argc, argv);
	len = 16 * page;
	p = map_isolated(len, PROT_READ | PROT_WRITE);
	touch(p, len, page);
	probe_watch_self(argc, argv);
	if (write_file("/proc/self/clear_refs", "4"))
		die("write /proc/self/clear_refs");
	touch(p, len / 2, page);
	pagemap_read(p, 16, pm);
	add_range("target", p, len);
	add_range("rewritten", p, len / 2);
	json_begin("softdirty", "clear_refs");
	json_u64s("pagemap", pm, 16);
	json_end();
	return 0;
}
