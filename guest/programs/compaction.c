/*
 * compaction [--pages=N] [--stride=K]: fragment memory, then compact every zone
 * (/proc/sys/vm/compact_memory) while the probe watches this mm.
 * N (default 32768) small pages are faulted in and all but every K-th (default 16) are freed again,
 * so the kept pages are scattered over partly used pageblocks: compaction only migrates into free
 * pages of pageblocks that are not wholly free, and these are what it finds.
 * Prints "stride" (K), "pagemap_before"/"pagemap_after" (/proc/self/pagemap of each kept page:
 * entry i is the page at target.start + i*K pages) and "seq_before"/"seq_after", the probe's record
 * count before the first snapshot and after the second: an invalidation for a page whose frame
 * changed must be among the records in between.
 */
#include "probe.h"

int main(int argc, char **argv)
{
	size_t n = 32768, stride = 16, kept, len;
	long long seq_before, seq_after;
	uint64_t *before, *after;
	char *p;

	setup(argc, argv);
	for (int i = 1; i < argc; i++) {
		sscanf(argv[i], "--pages=%zu", &n);
		sscanf(argv[i], "--stride=%zu", &stride);
	}
	if (!stride || n % stride)
		fail("--pages must be a multiple of --stride");
	len = n * page;
	kept = n / stride;
	p = map_isolated(len, PROT_READ | PROT_WRITE);
	if (madvise(p, len, MADV_NOHUGEPAGE))	/* small pages: one frame per pagemap entry */
		die("madvise NOHUGEPAGE");
	touch(p, len, page);
	for (size_t i = 0; i < kept; i++)
		if (stride > 1 && madvise(p + (i * stride + 1) * page, (stride - 1) * page, MADV_DONTNEED))
			die("madvise DONTNEED");
	before = calloc(n, sizeof(*before));
	after = calloc(n, sizeof(*after));
	if (!before || !after)
		die("calloc");
	probe_watch_self(argc, argv);
	seq_before = probe_recorded();
	pagemap_read(p, n, before);
	if (write_file("/proc/sys/vm/compact_memory", "1"))
		die("write /proc/sys/vm/compact_memory");
	pagemap_read(p, n, after);
	seq_after = probe_recorded();
	for (size_t i = 0; i < kept; i++) {	/* keep the kept pages' entries only */
		before[i] = before[i * stride];
		after[i] = after[i * stride];
	}
	add_range("target", p, len);
	json_begin("compaction", "compact_memory");
	json_int("stride", stride);
	json_int("seq_before", seq_before);
	json_int("seq_after", seq_after);
	json_u64s("pagemap_before", before, kept);
	json_u64s("pagemap_after", after, kept);
	json_end();
	return 0;
}
