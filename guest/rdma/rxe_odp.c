/*
 * rxe_odp SCENARIO [ARG] [--pages=N] [--mr=odp|pinned] [--dev=NAME]: soft-RoCE memory regions under test,
 * over a loopback RC connection of this process (rxe_loop.h). The last stdout line is the JSON summary.
 *
 *   caps            the device, its GID, and its on-demand paging capabilities ("odp": general_caps has
 *                   IBV_ODP_SUPPORT); exits 0 either way
 *   access          one read-only and one read-write MR (--mr=odp: IBV_ACCESS_ON_DEMAND, the default;
 *                   pinned: without), each RDMA READ, then an RDMA WRITE to each: "reg_ro"/"reg_rw" ("ok" or
 *                   the error), and per operation "status" and "mismatch" (bytes that differ from what the
 *                   CPU sees: for a read the MR's bytes, for a write what was sent; with "head_mismatch" and
 *                   "as_page_start" as rxe_loop.h:loop_compare counts them)
 *   follow OP       one read-only ODP MR over N pages (default 64) filled with pattern A and read once, then
 *                   OP, then more reads, each compared byte for byte with what the CPU sees at that moment:
 *     munmap        munmap, mmap again at the same address, write pattern B
 *     mprotect      mprotect read-only, read, then read-write again and write B
 *     dontneed      MADV_DONTNEED the first half (the CPU now sees zeros there)
 *     migrate       move_pages every page to the other NUMA node, read, write B
 *     compact       N (default 32768, as programs/compaction.c) pages with 1 in 16 kept, /proc/sys/vm/compact_memory, read, write B;
 *                   the MR spans all N, each kept page is read on its own (a read of a hole would fill it)
 *     unmapped      munmap the second half and leave it unmapped: a read of the first half, one of the
 *                   second (must complete with an error, not hang), and the first half again
 *   Trace markers (rxe_loop.h:trace_mark) "rxe_odp: ops" (access) or "rxe_odp: op" (follow, after the first
 *   read) and "rxe_odp: done" delimit what the host counts.
 *   "reads" lists each read: "when", "status", "mismatch" (bytes unlike the CPU's), "stale" (of those, bytes
 *   still equal to the pattern the CPU had before), "head_mismatch"/"head_stale" (the same within the first
 *   packet, "mtu" bytes, of each page), "as_page_start" (rxe_loop.h:loop_compare), "ms". "frames_changed" counts pages whose frame changed
 *   across OP (pagemap), "moved" pages move_pages put on the other node, "nodes" the online NUMA nodes.
 */
#include "rxe_loop.h"

#include <sys/syscall.h>

#define MPOL_MF_MOVE (1 << 1)

static struct loop l;
static struct ibv_mr *local_mr;
static unsigned char *local;	/* where reads land and writes come from: pinned, never invalidated */
static int first_read = 1;

/* Pattern GEN at byte offset i: never zero (so that zeroed pages show), different for every GEN. */
static unsigned char pattern(size_t i, unsigned gen)
{
	return (unsigned char)(1 + (i * 7 + (i >> 12) * 13 + gen * 101) % 251);
}

static void fill(unsigned char *p, size_t len, unsigned gen)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pattern(i, gen);
}

static void local_buffer(size_t len)
{
	local = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (local == MAP_FAILED)
		die("mmap local");
	local_mr = loop_reg(&l, local, len, IBV_ACCESS_LOCAL_WRITE);
	if (!local_mr)
		die("ibv_reg_mr local");
}

static void json_str(const char *name, const char *value)
{
	printf(",\"%s\":\"%s\"", name, value);
}

/* ---- caps ---------------------------------------------------------------------------------------- */

static int caps(void)
{
	const uint8_t *g = l.gid.raw;
	uint32_t general, rc;
	char gid[64];

	loop_odp_caps(&l, &general, &rc);
	snprintf(gid, sizeof(gid), "%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x",
		 g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
	json_begin("rxe_odp", "caps");
	json_str("device", l.dev);
	json_int("gid_index", l.gid_index);
	json_str("gid", gid);
	json_int("odp_general_caps", general);
	json_int("odp_rc_caps", rc);
	printf(",\"odp\":%s,\"odp_rc_read\":%s,\"odp_rc_write\":%s", general & IBV_ODP_SUPPORT ? "true" : "false",
	       rc & IBV_ODP_SUPPORT_READ ? "true" : "false", rc & IBV_ODP_SUPPORT_WRITE ? "true" : "false");
	json_end();
	return 0;
}

/* ---- access -------------------------------------------------------------------------------------- */

/* One operation's result: its status and how the bytes compare (expected first, then what is there). */
static void op_json(const char *name, int status, const unsigned char *dev, const unsigned char *cpu, size_t len,
		    int comma)
{
	struct cmp c = loop_compare(dev, cpu, len, loop_mtu_bytes(&l));

	printf("%s\"%s\":{\"status\":\"%s\",", comma ? "," : "", name, loop_status(status));
	cmp_json(&c);
	printf("}");
}

static int access_case(size_t pages, int odp)
{
	size_t len = pages * page;
	int od = odp ? IBV_ACCESS_ON_DEMAND : 0;
	unsigned char *ro = (unsigned char *)map_isolated(len, PROT_READ | PROT_WRITE);
	unsigned char *rw = (unsigned char *)map_isolated(len, PROT_READ | PROT_WRITE);
	unsigned char *before = malloc(len);
	struct ibv_mr *mr_ro, *mr_rw;
	const char *reg_ro = "ok", *reg_rw = "ok";
	int s;

	if (!before)
		die("malloc");
	fill(ro, len, 1);
	fill(rw, len, 2);
	local_buffer(len);
	mr_ro = loop_reg(&l, ro, len, od | IBV_ACCESS_REMOTE_READ);
	if (!mr_ro)
		reg_ro = strerror(errno);
	mr_rw = loop_reg(&l, rw, len, od | IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
	if (!mr_rw)
		reg_rw = strerror(errno);
	json_begin("rxe_odp", "access");
	json_str("mr", odp ? "odp" : "pinned");
	json_int("pages", pages);
	json_int("mtu", loop_mtu_bytes(&l));
	json_str("reg_ro", reg_ro);
	json_str("reg_rw", reg_rw);
	printf(",\"ops\":{");
	trace_mark("rxe_odp: ops");
	if (mr_ro && mr_rw) {
		memset(local, 0, len);
		s = loop_rdma(&l, IBV_WR_RDMA_READ, local, local_mr->lkey, ro, mr_ro->rkey, len, NULL);
		op_json("read_ro", s, local, ro, len, 0);
		memset(local, 0, len);
		s = loop_rdma(&l, IBV_WR_RDMA_READ, local, local_mr->lkey, rw, mr_rw->rkey, len, NULL);
		op_json("read_rw", s, local, rw, len, 1);
		fill(local, len, 3);
		s = loop_rdma(&l, IBV_WR_RDMA_WRITE, local, local_mr->lkey, rw, mr_rw->rkey, len, NULL);
		op_json("write_rw", s, local, rw, len, 1);
		/* the read-only MR grants no remote write: the responder must refuse, and the bytes stay */
		memcpy(before, ro, len);
		fill(local, len, 4);
		s = loop_rdma(&l, IBV_WR_RDMA_WRITE, local, local_mr->lkey, ro, mr_ro->rkey, len, NULL);
		op_json("write_ro", s, before, ro, len, 1);
	}
	trace_mark("rxe_odp: done");
	printf("}");
	add_range("ro", ro, len);
	add_range("rw", rw, len);
	json_end();
	return 0;
}

/* ---- follow -------------------------------------------------------------------------------------- */

struct area {
	unsigned char *p;
	size_t len, stride;	/* stride > 1: only every stride-th page is kept, and read */
	struct ibv_mr *mr;
};

/*
 * Read the area (its kept pages) into `local`, and compare with the CPU's bytes now; "stale" counts the
 * differing bytes still equal to pattern `old`, "head_stale" those in the first packet of their page.
 */
static void read_area(struct area *a, const char *when, unsigned old)
{
	size_t stale = 0, head_stale = 0, head = loop_mtu_bytes(&l), chunk = a->stride > 1 ? (size_t)page : a->len;
	struct cmp c = {0, 0, 0}, one;
	double secs = 0, t;
	int status = IBV_WC_SUCCESS;

	for (size_t off = 0; off < a->len; off += chunk * (a->stride > 1 ? a->stride : 1)) {
		memset(local, 0, chunk);
		status = loop_rdma(&l, IBV_WR_RDMA_READ, local, local_mr->lkey, a->p + off, a->mr->rkey, chunk, &t);
		secs += t;
		if (status != IBV_WC_SUCCESS)
			break;
		one = loop_compare(local, a->p + off, chunk, head);
		c.mismatch += one.mismatch;
		c.head_mismatch += one.head_mismatch;
		c.as_page_start += one.as_page_start;
		for (size_t i = 0; i < chunk; i++)
			if (local[i] != a->p[off + i] && local[i] == pattern(off + i, old)) {
				stale++;
				head_stale += i % page < head;
			}
	}
	printf("%s{\"when\":\"%s\",\"status\":\"%s\",", first_read ? "" : ",", when, loop_status(status));
	cmp_json(&c);
	printf(",\"stale\":%zu,\"head_stale\":%zu,\"ms\":%.3f}", stale, head_stale, secs * 1e3);
	first_read = 0;
}

/* Read [off, off+len) of the area once (the unmapped case's halves), compared with pattern `gen`. */
static void read_part(struct area *a, size_t off, size_t len, const char *when, unsigned gen)
{
	unsigned char *want = malloc(len);
	struct cmp c = {0, 0, 0};
	double t;
	int status;

	if (!want)
		die("malloc");
	for (size_t i = 0; i < len; i++)
		want[i] = pattern(off + i, gen);
	memset(local, 0, len);
	status = loop_rdma(&l, IBV_WR_RDMA_READ, local, local_mr->lkey, a->p + off, a->mr->rkey, len, &t);
	if (status == IBV_WC_SUCCESS)
		c = loop_compare(local, want, len, loop_mtu_bytes(&l));
	printf("%s{\"when\":\"%s\",\"status\":\"%s\",", first_read ? "" : ",", when, loop_status(status));
	cmp_json(&c);
	printf(",\"stale\":0,\"head_stale\":0,\"ms\":%.3f}", t * 1e3);
	first_read = 0;
	free(want);
}

static void fill_kept(struct area *a, unsigned gen)
{
	for (size_t off = 0; off < a->len; off += a->stride * page)
		for (size_t i = 0; i < (size_t)page; i++)
			a->p[off + i] = pattern(off + i, gen);
}

static void frames(struct area *a, uint64_t *out)
{
	size_t n = a->len / page;

	pagemap_read(a->p, n, out);
	for (size_t i = 0; i < n; i++)
		out[i] = out[i] & (1ULL << 63) ? out[i] & ((1ULL << 55) - 1) : 0;
}

static size_t frames_changed(struct area *a, const uint64_t *before, const uint64_t *after)
{
	size_t n = 0;

	for (size_t i = 0; i < a->len / page; i += a->stride)
		n += before[i] && before[i] != after[i];
	return n;
}

static int online_nodes(void)
{
	char path[64];
	int n = 0;

	for (int i = 0; i < 64; i++) {
		snprintf(path, sizeof(path), "/sys/devices/system/node/node%d", i);
		n += access(path, F_OK) == 0;
	}
	return n;
}

/* move_pages every page to the node the first one is not on; how many landed there. */
static size_t migrate(struct area *a, int *target)
{
	size_t n = a->len / page, moved = 0;
	void **pages = calloc(n, sizeof(*pages));
	int *nodes = calloc(n, sizeof(*nodes)), *status = calloc(n, sizeof(*status));

	if (!pages || !nodes || !status)
		die("calloc");
	for (size_t i = 0; i < n; i++)
		pages[i] = a->p + i * page;
	if (syscall(SYS_move_pages, 0, n, pages, NULL, status, 0))
		die("move_pages (query)");
	*target = status[0] == 0 ? 1 : 0;
	for (size_t i = 0; i < n; i++)
		nodes[i] = *target;
	if (syscall(SYS_move_pages, 0, n, pages, nodes, status, MPOL_MF_MOVE) < 0)
		die("move_pages");
	for (size_t i = 0; i < n; i++)
		moved += status[i] == *target;
	free(pages);
	free(nodes);
	free(status);
	return moved;
}

static int follow(const char *op, size_t pages)
{
	int compact = !strcmp(op, "compact");
	struct area a = {.stride = compact ? 16 : 1};
	size_t n = compact && !pages ? 32768 : pages ? pages : 64, moved = 0;
	uint64_t *before, *after;
	int target = -1, have_frames = 0;

	a.len = n * page;
	a.p = (unsigned char *)map_isolated(a.len, PROT_READ | PROT_WRITE);
	if (madvise(a.p, a.len, MADV_NOHUGEPAGE))	/* one frame per page: pagemap and move_pages per page */
		die("madvise NOHUGEPAGE");
	before = calloc(n, sizeof(*before));
	after = calloc(n, sizeof(*after));
	if (!before || !after)
		die("calloc");
	if (compact) {	/* scattered survivors in partly used pageblocks: what compaction migrates */
		touch((char *)a.p, a.len, page);
		for (size_t i = 0; i < n; i += 16)
			if (madvise(a.p + (i + 1) * page, 15 * page, MADV_DONTNEED))
				die("madvise DONTNEED");
		fill_kept(&a, 1);
	} else {
		fill(a.p, a.len, 1);
	}
	local_buffer(compact ? (size_t)page : a.len);
	a.mr = loop_reg(&l, a.p, a.len, IBV_ACCESS_ON_DEMAND | IBV_ACCESS_REMOTE_READ);
	if (!a.mr)
		die("ibv_reg_mr ON_DEMAND");

	json_begin("rxe_odp", "follow");
	json_str("op", op);
	json_int("pages", n);
	json_int("mtu", loop_mtu_bytes(&l));
	printf(",\"reads\":[");
	read_area(&a, "before", 0);
	frames(&a, before);
	trace_mark("rxe_odp: op");
	if (!strcmp(op, "munmap")) {
		if (munmap(a.p, a.len))
			die("munmap");
		if (mmap(a.p, a.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != a.p)
			die("mmap at the same address");
		fill(a.p, a.len, 2);
		read_area(&a, "after_remap", 1);
	} else if (!strcmp(op, "mprotect")) {
		if (mprotect(a.p, a.len, PROT_READ))
			die("mprotect PROT_READ");
		read_area(&a, "after_mprotect_ro", 0);
		if (mprotect(a.p, a.len, PROT_READ | PROT_WRITE))
			die("mprotect PROT_READ|PROT_WRITE");
		fill(a.p, a.len, 2);
		read_area(&a, "after_write", 1);
	} else if (!strcmp(op, "dontneed")) {
		if (madvise(a.p, a.len / 2, MADV_DONTNEED))
			die("madvise DONTNEED");
		read_area(&a, "after_dontneed", 1);
	} else if (!strcmp(op, "migrate")) {
		if (online_nodes() >= 2) {
			moved = migrate(&a, &target);
			frames(&a, after);
			have_frames = 1;
		}
		read_area(&a, "after_migrate", 0);
		fill(a.p, a.len, 2);
		read_area(&a, "after_write", 1);
	} else if (compact) {
		if (write_file("/proc/sys/vm/compact_memory", "1"))
			die("write /proc/sys/vm/compact_memory");
		frames(&a, after);
		have_frames = 1;
		read_area(&a, "after_compact", 0);
		fill_kept(&a, 2);
		read_area(&a, "after_write", 1);
	} else if (!strcmp(op, "unmapped")) {
		size_t half = a.len / 2;

		if (munmap(a.p + half, half))
			die("munmap second half");
		read_part(&a, 0, half, "mapped_half", 1);
		read_part(&a, half, half, "unmapped_half", 1);
		read_part(&a, 0, half, "mapped_half_again", 1);
	} else {
		fail("unknown follow operation: munmap, mprotect, dontneed, migrate, compact, unmapped");
	}
	trace_mark("rxe_odp: done");
	printf("]");
	json_int("frames_changed", have_frames ? (long long)frames_changed(&a, before, after) : -1);
	json_int("moved", moved);
	json_int("target_node", target);
	json_int("nodes", online_nodes());
	add_range("mr", a.p, a.len);
	json_end();
	return 0;
}

int main(int argc, char **argv)
{
	const char *scenario = NULL, *arg = NULL, *mr = "odp";
	size_t pages = 0;

	setup(argc, argv);
	for (int i = 1; i < argc; i++) {
		if (sscanf(argv[i], "--pages=%zu", &pages) == 1)
			continue;
		if (!strncmp(argv[i], "--mr=", 5))
			mr = argv[i] + 5;
		else if (strncmp(argv[i], "--", 2))
			*(scenario ? &arg : &scenario) = argv[i];
	}
	if (!scenario)
		fail("usage: rxe_odp caps|access|follow OP [--pages=N] [--mr=odp|pinned] [--dev=NAME]");
	loop_open(&l, dev_arg(argc, argv));
	if (!strcmp(scenario, "caps"))
		return caps();
	if (!strcmp(scenario, "access"))
		return access_case(pages ? pages : 16, strcmp(mr, "pinned") != 0);
	if (!strcmp(scenario, "follow") && arg)
		return follow(arg, pages);
	fail("unknown scenario: caps, access, follow OP");
	return 1;
}
