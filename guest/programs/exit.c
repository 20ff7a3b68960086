/*
 * exit: subscribe the probe (classic notifier on the mm, interval notifier on 16 touched pages), then
 * exit without unmapping anything: what the subscribers see is the exit itself.
 * Ranges: "target" (the 16 pages the interval notifier watches).
 */
#include "probe.h"

int main(int argc, char **argv)
{
	size_t len;
	char *p;

	setup(argc, argv);
	len = 16 * page;
	p = map_isolated(len, PROT_READ | PROT_WRITE);
	touch(p, len, page);
	probe_watch_self(argc, argv);
	probe_watch_range_self(p, len);
	add_range("target", p, len);
	json_begin("exit", "exit");
	json_end();
	return 0;
}
