/*
 * ev_rxe CASE ro|rw [--pages=N] [--iters=K] [--dir=D] [--dev=NAME]: the evidence workloads
 * (programs/ev_cases.h) against soft-RoCE's on-demand paging: the mirrored pages are one ODP memory region
 * of this process, accessed over a loopback RC connection (rxe_loop.h), so rxe's interval notifier
 * (drivers/infiniband/sw/rxe/rxe_odp.c:rxe_ib_invalidate_range) sees every invalidation of them.
 *
 *   ro   the MR grants remote read only; each access RDMA-READs the whole mirrored range, and the verify
 *        compares it byte for byte with what the CPU sees (nothing else runs in between): a byte that differs
 *        is a wrong read. ev_cases.h's operations write a new byte at each page start every iteration
 *        (ev_write), so a device that kept a stale frame, or missed a write, reads a byte the CPU no longer has.
 *   rw   the MR is writable; each access RDMA-WRITEs a fresh pattern over the mirrored range, and the verify
 *        checks that the CPU sees every byte of it (one it does not see went to a stale frame)
 *
 * Prints ev_json_common's fields and "mode", "stale_bytes", "head_stale_bytes" (of those, bytes in the first
 * packet, "mtu" bytes, of their page), "as_page_start_bytes" (rxe_loop.h:loop_compare), "stale_iters",
 * "errors", "first_error" (a completion status), "access_ms" (every access: the host computes ops/s and the latency spread from them).
 * The device's faults and invalidations are counted on the host (kprobes: harness/checks/rdma.py), between
 * the trace markers "ev_rxe: loop" and "ev_rxe: done" (the iterations, without registration and exit).
 */
#include "../programs/ev_cases.h"
#include "rxe_loop.h"

static struct loop l;
static struct ibv_mr *mr, *local_mr;
static unsigned char *local;
static int writable;
static size_t stale_bytes, head_stale_bytes, as_page_start_bytes, stale_iters, errors, iter;
static int last_status;
static const char *first_error = "";
static double *access_s;

static unsigned char pattern(size_t i, size_t gen)
{
	return (unsigned char)(1 + (i * 7 + (i >> 12) * 13 + gen * 101) % 251);
}

static void rxe_access(struct ev *ev)
{
	enum ibv_wr_opcode op = writable ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
	int status;

	if (writable)
		for (size_t i = 0; i < ev->mlen; i++)
			local[i] = pattern(i, iter + 1);
	else
		memset(local, 0, ev->mlen);
	status = loop_rdma(&l, op, local, local_mr->lkey, ev->p, mr->rkey, ev->mlen, &access_s[iter]);
	last_status = status;
	if (status != IBV_WC_SUCCESS && !errors++)
		first_error = loop_status(status);
}

static void rxe_verify(struct ev *ev)
{
	struct cmp c = {0, 0, 0};

	if (last_status == IBV_WC_SUCCESS)	/* a failed access is counted as an error */
		c = loop_compare(local, (unsigned char *)ev->p, ev->mlen, loop_mtu_bytes(&l));
	stale_bytes += c.mismatch;
	head_stale_bytes += c.head_mismatch;
	as_page_start_bytes += c.as_page_start;
	stale_iters += c.mismatch > 0;
	iter++;
}

int main(int argc, char **argv)
{
	struct ev ev;
	int access;

	setup(argc, argv);
	ev_args(&ev, argc, argv, 2, "usage: ev_rxe CASE ro|rw [--pages=N] [--iters=K] [--dir=D] [--dev=NAME]");
	writable = !strcmp(ev.pos[1], "rw");
	if (!writable && strcmp(ev.pos[1], "ro"))
		fail("the mode is ro or rw");
	loop_open(&l, dev_arg(argc, argv));
	ev_map(&ev);
	access = IBV_ACCESS_ON_DEMAND | IBV_ACCESS_REMOTE_READ |
		 (writable ? IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE : 0);
	mr = loop_reg(&l, ev.p, ev.mlen, access);
	if (!mr)
		die("ibv_reg_mr ON_DEMAND");
	local = mmap(NULL, ev.mlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (local == MAP_FAILED)
		die("mmap local");
	local_mr = loop_reg(&l, local, ev.mlen, IBV_ACCESS_LOCAL_WRITE);
	if (!local_mr)
		die("ibv_reg_mr local");
	access_s = calloc(ev.iters + 1, sizeof(*access_s));
	if (!access_s)
		die("calloc");
	rxe_access(&ev);	/* the first faults, outside the timed loop */
	rxe_verify(&ev);
	stale_bytes = head_stale_bytes = as_page_start_bytes = stale_iters = iter = 0;

	trace_mark("ev_rxe: loop");
	ev_loop(&ev, rxe_access, rxe_verify);
	trace_mark("ev_rxe: done");

	json_begin("ev_rxe", ev.kase);
	printf(",\"mode\":\"%s\",\"first_error\":\"%s\",\"access_ms\":[", ev.pos[1], first_error);
	for (size_t i = 0; i < ev.iters; i++)
		printf("%s%.3f", i ? "," : "", access_s[i] * 1e3);
	printf("]");
	json_int("stale_bytes", stale_bytes);
	json_int("head_stale_bytes", head_stale_bytes);
	json_int("as_page_start_bytes", as_page_start_bytes);
	json_int("mtu", loop_mtu_bytes(&l));
	json_int("stale_iters", stale_iters);
	json_int("errors", errors);
	ev_json_common(&ev);
	json_end();
	if (ev.fd >= 0)
		close(ev.fd);
	return 0;
}
