/*
 * A loopback RC connection on one RDMA device (soft-RoCE's rxe0 in the guest): two queue pairs of this
 * process, connected to each other through the port's own GID. QP a posts; QP b answers, so an RDMA READ
 * or WRITE from a lands on memory this same process registered: the memory region follows this mm, which
 * the workloads change. Every operation is waited for with a deadline: a lost completion is reported, never
 * a hang.
 */
#ifndef GUEST_RXE_LOOP_H
#define GUEST_RXE_LOOP_H

#include "../programs/probe.h"

#include <infiniband/verbs.h>
#include <time.h>

#define LOOP_TIMEOUT_MS 20000	/* TCG: an ODP fault of a few MiB takes well under a second */
#define LOOP_TIMED_OUT -1

struct loop {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_qp *a, *b;
	uint8_t port;
	int gid_index;
	union ibv_gid gid;
	enum ibv_mtu mtu;
	uint64_t posted;
	char dev[64];
};

static inline void check_rc(int rc, const char *what)
{
	if (rc) {
		errno = rc;	/* verbs return the error number rather than set errno */
		die(what);
	}
}

static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * A line in the kernel's trace buffer (trace_marker): the host reads it between the hits of its kprobes, so
 * it can tell what the driver did in each phase of the program. Without tracefs nothing is written.
 */
static inline void trace_mark(const char *what)
{
	write_file("/sys/kernel/tracing/trace_marker", what);
}

/* --dev=NAME, or NULL for the first device. */
static inline const char *dev_arg(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strncmp(argv[i], "--dev=", 6))
			return argv[i] + 6;
	return NULL;
}

/*
 * The GID the loopback uses: RoCE v2 with an IPv4-mapped address first (the netdev's IPv4 address, what
 * `rdma link add ... netdev eth0` gives), then any RoCE v2 one, then any non-zero one.
 */
static inline void loop_pick_gid(struct loop *l)
{
	static const uint8_t zero[16], v4prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	struct ibv_port_attr pa;
	int score = -1;

	check_rc(ibv_query_port(l->ctx, l->port, &pa), "ibv_query_port");
	if (pa.state != IBV_PORT_ACTIVE)
		fail("port 1 of the RDMA device is not ACTIVE (is its netdev up?)");
	l->mtu = pa.active_mtu < IBV_MTU_1024 ? pa.active_mtu : IBV_MTU_1024;
	l->gid_index = -1;
	for (int i = 0; i < pa.gid_tbl_len; i++) {
		struct ibv_gid_entry e;
		int s;

		if (ibv_query_gid_ex(l->ctx, l->port, i, &e, 0) || !memcmp(e.gid.raw, zero, 16))
			continue;
		s = 2 * (e.gid_type == IBV_GID_TYPE_ROCE_V2) + !memcmp(e.gid.raw, v4prefix, 12);
		if (s > score) {
			score = s;
			l->gid_index = i;
			l->gid = e.gid;
		}
	}
	if (l->gid_index < 0)
		fail("no GID on port 1: the netdev under the RDMA device has no address");
}

static inline struct ibv_qp *loop_qp(struct loop *l)
{
	struct ibv_qp_init_attr init = {
		.send_cq = l->cq, .recv_cq = l->cq, .qp_type = IBV_QPT_RC, .sq_sig_all = 1,
		.cap = {.max_send_wr = 16, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1},
	};
	struct ibv_qp_attr attr = {
		.qp_state = IBV_QPS_INIT, .pkey_index = 0, .port_num = l->port,
		.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE,
	};
	struct ibv_qp *qp = ibv_create_qp(l->pd, &init);

	if (!qp)
		die("ibv_create_qp");
	check_rc(ibv_modify_qp(qp, &attr, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS),
		 "ibv_modify_qp INIT");
	return qp;
}

static inline void loop_connect(struct loop *l, struct ibv_qp *qp, uint32_t remote_qpn)
{
	struct ibv_qp_attr rtr = {
		.qp_state = IBV_QPS_RTR, .path_mtu = l->mtu, .dest_qp_num = remote_qpn, .rq_psn = 0,
		.max_dest_rd_atomic = 1, .min_rnr_timer = 12,
		.ah_attr = {.is_global = 1, .port_num = l->port,
			    .grh = {.dgid = l->gid, .sgid_index = l->gid_index, .hop_limit = 64}},
	};
	struct ibv_qp_attr rts = {
		.qp_state = IBV_QPS_RTS, .timeout = 14, .retry_cnt = 7, .rnr_retry = 7, .sq_psn = 0,
		.max_rd_atomic = 1,
	};

	check_rc(ibv_modify_qp(qp, &rtr, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
			       IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER), "ibv_modify_qp RTR");
	check_rc(ibv_modify_qp(qp, &rts, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			       IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC), "ibv_modify_qp RTS");
}

/* Two fresh QPs connected to each other (again after an error completion, which leaves them in ERR). */
static inline void loop_qps(struct loop *l)
{
	struct ibv_wc wc;

	if (l->a)
		check_rc(ibv_destroy_qp(l->a), "ibv_destroy_qp");
	if (l->b)
		check_rc(ibv_destroy_qp(l->b), "ibv_destroy_qp");
	while (ibv_poll_cq(l->cq, 1, &wc) > 0)	/* flushed completions of the old QPs */
		;
	l->a = loop_qp(l);
	l->b = loop_qp(l);
	loop_connect(l, l->a, l->b->qp_num);
	loop_connect(l, l->b, l->a->qp_num);
}

static inline void loop_open(struct loop *l, const char *name)
{
	int n;
	struct ibv_device **list = ibv_get_device_list(&n);
	struct ibv_device *dev = NULL;

	memset(l, 0, sizeof(*l));
	if (!list)
		die("ibv_get_device_list");
	for (int i = 0; i < n && !dev; i++)
		if (!name || !strcmp(ibv_get_device_name(list[i]), name))
			dev = list[i];
	if (!dev)
		fail(name ? "no such RDMA device" : "no RDMA device (rdma link add rxe0 type rxe netdev eth0?)");
	snprintf(l->dev, sizeof(l->dev), "%s", ibv_get_device_name(dev));
	l->ctx = ibv_open_device(dev);
	if (!l->ctx)
		die("ibv_open_device");
	ibv_free_device_list(list);
	l->port = 1;
	loop_pick_gid(l);
	l->pd = ibv_alloc_pd(l->ctx);
	if (!l->pd)
		die("ibv_alloc_pd");
	l->cq = ibv_create_cq(l->ctx, 64, NULL, NULL, 0);
	if (!l->cq)
		die("ibv_create_cq");
	loop_qps(l);
}

/* Register len bytes at p; NULL with errno set when the kernel refuses (the caller reports why). */
static inline struct ibv_mr *loop_reg(struct loop *l, void *p, size_t len, int access)
{
	return ibv_reg_mr(l->pd, p, len, access);
}

/*
 * One RDMA READ (remote -> local) or WRITE (local -> remote) of len bytes posted on QP a and waited for.
 * Returns IBV_WC_SUCCESS (0), the completion's error status, or LOOP_TIMED_OUT; *secs is how long it took.
 * After an error the QPs are replaced, so that the next operation runs on a connected pair again.
 */
static inline int loop_rdma(struct loop *l, enum ibv_wr_opcode op, void *local, uint32_t lkey, void *remote,
			    uint32_t rkey, uint32_t len, double *secs)
{
	struct ibv_sge sge = {.addr = (uintptr_t)local, .length = len, .lkey = lkey};
	struct ibv_send_wr wr = {
		.wr_id = ++l->posted, .sg_list = &sge, .num_sge = 1, .opcode = op, .send_flags = IBV_SEND_SIGNALED,
		.wr.rdma = {.remote_addr = (uintptr_t)remote, .rkey = rkey},
	}, *bad;
	double t0 = now_s(), deadline = t0 + LOOP_TIMEOUT_MS / 1000.0;
	struct ibv_wc wc;
	int n, status = LOOP_TIMED_OUT;

	check_rc(ibv_post_send(l->a, &wr, &bad), "ibv_post_send");
	for (;;) {
		n = ibv_poll_cq(l->cq, 1, &wc);
		if (n < 0)
			fail("ibv_poll_cq failed");
		if (n == 1 && wc.wr_id == wr.wr_id) {
			status = wc.status;
			break;
		}
		if (n == 0 && now_s() > deadline)
			break;
		if (n == 0)
			sched_yield();
	}
	if (secs)
		*secs = now_s() - t0;
	if (status != IBV_WC_SUCCESS)
		loop_qps(l);
	return status;
}

static inline const char *loop_status(int status)
{
	return status == LOOP_TIMED_OUT ? "timeout" : ibv_wc_status_str((enum ibv_wc_status)status);
}

/* The loopback's path MTU in bytes: an RDMA READ or WRITE travels in packets of this size. */
static inline size_t loop_mtu_bytes(const struct loop *l)
{
	return (size_t)128 << l->mtu;	/* IBV_MTU_256 is 1 */
}

/*
 * What the device delivered (dev) against what the CPU sees (cpu), for len bytes from a page boundary:
 * "mismatch" bytes that differ; "head_mismatch" those in the first packet (head bytes) of their page;
 * "as_page_start" those equal to the byte one or more packets earlier at the same place in the page's first
 * packet: what a copy that lost the in-page offset delivers (7.3's rxe_odp.c:__rxe_odp_mr_copy).
 */
struct cmp {
	size_t mismatch, head_mismatch, as_page_start;
};

static inline struct cmp loop_compare(const unsigned char *dev, const unsigned char *cpu, size_t len, size_t head)
{
	struct cmp c = {0, 0, 0};

	for (size_t i = 0; i < len; i++) {
		size_t in_page = i % page;

		if (dev[i] == cpu[i])
			continue;
		c.mismatch++;
		if (in_page < head)
			c.head_mismatch++;
		else if (dev[i] == cpu[i - in_page + in_page % head])
			c.as_page_start++;
	}
	return c;
}

static inline void cmp_json(const struct cmp *c)
{
	printf("\"mismatch\":%zu,\"head_mismatch\":%zu,\"as_page_start\":%zu", c->mismatch, c->head_mismatch,
	       c->as_page_start);
}

/* The device's on-demand paging capabilities, as the kernel reports them (ibv_query_device_ex). */
static inline void loop_odp_caps(struct loop *l, uint32_t *general, uint32_t *rc)
{
	struct ibv_device_attr_ex attr;

	check_rc(ibv_query_device_ex(l->ctx, NULL, &attr), "ibv_query_device_ex");
	*general = attr.odp_caps.general_caps;
	*rc = attr.odp_caps.per_transport_caps.rc_odp_caps;
}

#endif
