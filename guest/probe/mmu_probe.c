// SPDX-License-Identifier: GPL-2.0
/*
 * mmu_probe: a test-only mmu_notifier subscriber.
 *
 * Two kinds of subscriber, as drivers use them:
 *   watch        "PID": a classic mmu_notifier (invalidate_range_start/end, release) on its mm
 *   watch_range  "PID START END [twopass]": an mmu_interval_notifier on [START, END) of its mm (decimal or
 *                0x); twopass (7.x) subscribes it in two passes: the start pass is recorded as the
 *                invalidation, the finish pass counted (counters: itv_starts, itv_finishes, itv_inline)
 * Every callback is appended to a fixed ring, which /sys/kernel/debug/mmu_probe/events prints one
 * record a line:
 *
 *   seq=N pid=P cpid=C sub=mn|itv kind=start|end|release|invalidate event=NAME start=0x.. end=0x.. flags=0x..
 *
 * pid is the subscribed process, cpid the task that caused the callback (e.g. kcompactd), sub the
 * subscriber (mn: classic, itv: interval; an interval notifier has one "invalidate" callback and no
 * end), NAME the kernel's own enum mmu_notifier_event name without MMU_NOTIFY_ (table generated from
 * this tree's include/linux/mmu_notifier.h into mmu_probe_events.h). Writing anything to "clear"
 * drops all subscriptions and records. "counters" prints per-event totals of classic starts,
 * interval invalidations, starts still open (a start whose end never came), and drops.
 *
 * A model device driver ("mirror", see docs/evidence.md): writing "PID START END ro|rw blind|context"
 * to "mirror" makes a device-side mirror of [START, END) of PID's mm, kept valid by an
 * mmu_interval_notifier. The mirrored process itself writes a mirror id to "access" (a device access:
 * re-fault the mirror if it was torn down) and to "verify" (count mirrored pages whose frame is no
 * longer the one the process maps: a stale mirror). Reading "mirror" prints one line per mirror with
 * its counters. blind acts on every invalidation; context skips what cannot affect it (see
 * mirror_skips()) and frees its per-range tracking only when the range goes away (UNMAP, RELEASE);
 * unsafe skips everything but RELEASE (a negative control for verify, never a policy); noretry acts
 * like blind but its fault path never calls mmu_interval_read_retry() (the other negative control: a
 * driver that forgot the check; verify must catch it once an invalidation races a fault).
 * "retries" counts faults that looked again because mmu_interval_read_retry() said the sequence
 * moved: proof that an invalidation raced a fault (for noretry, the times the check would have said so).
 *
 * On a kernel with the two-pass interval notifier (7.x: mmu_interval_notifier_ops.invalidate_start and
 * invalidate_finish, mm/mmu_notifier.c:mn_itree_invalidate; detected at build time, read back as the
 * module parameter two_pass), two more modes act like blind in two passes, as drivers that overlap device
 * TLB flushes across GPUs do (drm_gpusvm, xe): twopass tears the mirror down and makes faults retry in the
 * start pass, and its finish pass waits for the device's flush (modelled: FLUSH_US of busy wait). twolate
 * is the negative control: it moves the sequence only in the finish pass, so a fault that completes
 * between the passes maps what the finish will not tear down. Their counters: starts, finishes (every
 * start that asked for a finish got one: pending is the difference), inline (a start that did the whole
 * work itself: the finish pool was empty), mapped_between (a fault made the mirror valid between a start
 * and its finish: what the finish misses) and seq_errors (a start's sequence not odd, or behind one
 * seen before).
 *
 * Builds on 6.1 (struct mmu_notifier_range has a vma there) and 6.12: only named fields are read.
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/kernel.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/sched/mm.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "mmu_probe_events.h" /* mmu_probe_event_names[] by enum mmu_notifier_event; MMU_PROBE_TWO_PASS */

#define RING_SIZE (1 << 16)

#ifdef MMU_PROBE_TWO_PASS
static bool two_pass = true;
#else
static bool two_pass;
#endif
module_param(two_pass, bool, 0444);
MODULE_PARM_DESC(two_pass, "this kernel has the two-pass interval notifier (the twopass and twolate mirror modes)");

enum rec_kind { REC_START, REC_END, REC_RELEASE, REC_INVALIDATE };
static const char *const kind_names[] = { "start", "end", "release", "invalidate" };

struct rec {
	u64 seq;
	pid_t pid, cpid;
	u8 kind, event, flags, interval;
	unsigned long start, end;
};

struct subscription {
	struct mmu_notifier mn;
	struct mm_struct *mm;
	pid_t pid;
	bool released;			/* release() came: no callback may follow it */
	struct list_head node;
};

#define ITV_FINISHES 4	/* two-pass finishes in flight per subscription: more start passes do it all (inline) */

struct interval_subscription {
	struct mmu_interval_notifier ni;
	pid_t pid;
	struct list_head node;
#ifdef MMU_PROBE_TWO_PASS
	struct mmu_interval_notifier_finish finishes[ITV_FINISHES];
	unsigned long busy;		/* a bit per finish in flight */
#endif
};

static DEFINE_SPINLOCK(ring_lock);	/* callbacks may run where sleeping is not allowed */
static struct rec *ring;
static u64 next_seq;			/* records ever written; the ring keeps the last RING_SIZE */
static u64 counts[ARRAY_SIZE(mmu_probe_event_names)];	/* classic starts by event */
static u64 itv_counts[ARRAY_SIZE(mmu_probe_event_names)];	/* interval invalidations by event */
static u64 unknown_events, starts, ends, releases, invalidates, unmatched_ends, after_release;
static u64 itv_starts, itv_finishes, itv_inline;	/* two-pass interval subscriptions' passes */

static DEFINE_MUTEX(subs_lock);
static LIST_HEAD(subs);
static LIST_HEAD(interval_subs);
static struct dentry *dir;

static void record(pid_t pid, enum rec_kind kind, const struct mmu_notifier_range *range)
{
	u64 *by_event = kind == REC_INVALIDATE ? itv_counts : counts;
	int event = range ? range->event : 0;
	unsigned long irqflags;
	struct rec *r;

	spin_lock_irqsave(&ring_lock, irqflags);
	r = &ring[next_seq % RING_SIZE];
	r->seq = next_seq++;
	r->pid = pid;
	r->cpid = task_tgid_nr(current);
	r->kind = kind;
	r->interval = kind == REC_INVALIDATE;
	r->event = event;
	r->flags = range ? range->flags : 0;
	r->start = range ? range->start : 0;
	r->end = range ? range->end : 0;
	if (kind == REC_START || kind == REC_INVALIDATE) {
		if (kind == REC_START)
			starts++;
		else
			invalidates++;
		if (event >= 0 && event < ARRAY_SIZE(counts))
			by_event[event]++;
		else
			unknown_events++;
	} else if (kind == REC_END) {
		/* An end with no start open anywhere breaks the contract as surely as a missing end. */
		if (ends >= starts)
			unmatched_ends++;
		ends++;
	} else {
		releases++;
	}
	spin_unlock_irqrestore(&ring_lock, irqflags);
}

/* The contract says nothing follows release(); count what does (read with the other counters). */
static void check_not_released(struct subscription *sub)
{
	unsigned long irqflags;

	if (!READ_ONCE(sub->released))
		return;
	spin_lock_irqsave(&ring_lock, irqflags);
	after_release++;
	spin_unlock_irqrestore(&ring_lock, irqflags);
}

static int probe_invalidate_range_start(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	struct subscription *sub = container_of(mn, struct subscription, mn);

	check_not_released(sub);
	record(sub->pid, REC_START, range);
	return 0;
}

static void probe_invalidate_range_end(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	struct subscription *sub = container_of(mn, struct subscription, mn);

	check_not_released(sub);
	record(sub->pid, REC_END, range);
}

static void probe_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct subscription *sub = container_of(mn, struct subscription, mn);

	WRITE_ONCE(sub->released, true);
	record(sub->pid, REC_RELEASE, NULL);
}

static bool probe_interval_invalidate(struct mmu_interval_notifier *ni, const struct mmu_notifier_range *range,
				      unsigned long cur_seq)
{
	struct interval_subscription *isub = container_of(ni, struct interval_subscription, ni);

	/* What a driver does under its own lock: make readers of the old sequence retry. */
	mmu_interval_set_seq(ni, cur_seq);
	record(isub->pid, REC_INVALIDATE, range);
	return true;	/* we never sleep, so a non-blockable range is fine too */
}

static const struct mmu_interval_notifier_ops probe_interval_ops = {
	.invalidate = probe_interval_invalidate,
};

#ifdef MMU_PROBE_TWO_PASS
static bool probe_interval_invalidate_start(struct mmu_interval_notifier *ni, const struct mmu_notifier_range *range,
					    unsigned long cur_seq, struct mmu_interval_notifier_finish **finish)
{
	struct interval_subscription *isub = container_of(ni, struct interval_subscription, ni);
	unsigned long irqflags;
	int i;

	probe_interval_invalidate(ni, range, cur_seq);
	for (i = 0; i < ITV_FINISHES; i++)
		if (!test_and_set_bit(i, &isub->busy)) {
			*finish = &isub->finishes[i];
			break;
		}
	spin_lock_irqsave(&ring_lock, irqflags);
	itv_starts++;
	if (i == ITV_FINISHES)
		itv_inline++;
	spin_unlock_irqrestore(&ring_lock, irqflags);
	return true;
}

static void probe_interval_invalidate_finish(struct mmu_interval_notifier_finish *finish)
{
	struct interval_subscription *isub = container_of(finish->notifier, struct interval_subscription, ni);
	unsigned long irqflags;

	spin_lock_irqsave(&ring_lock, irqflags);
	itv_finishes++;
	spin_unlock_irqrestore(&ring_lock, irqflags);
	clear_bit(finish - isub->finishes, &isub->busy);
}

static const struct mmu_interval_notifier_ops probe_interval_two_pass_ops = {
	.invalidate_start = probe_interval_invalidate_start,
	.invalidate_finish = probe_interval_invalidate_finish,
};
#endif

static const struct mmu_notifier_ops probe_ops = {
	.invalidate_range_start = probe_invalidate_range_start,
	.invalidate_range_end = probe_invalidate_range_end,
	.release = probe_release,
};

/* The mm of a process, with a reference the caller drops with mmput(). */
static struct mm_struct *pid_mm(pid_t pid)
{
	struct task_struct *task;
	struct pid *p = find_get_pid(pid);
	struct mm_struct *mm;

	task = get_pid_task(p, PIDTYPE_PID);
	put_pid(p);
	if (!task)
		return ERR_PTR(-ESRCH);
	mm = get_task_mm(task);
	put_task_struct(task);
	return mm ? mm : ERR_PTR(-EINVAL);	/* a kernel thread, or a process already exiting */
}

static int subscribe(pid_t pid)
{
	struct subscription *sub;
	struct mm_struct *mm;
	int ret;

	mm = pid_mm(pid);
	if (IS_ERR(mm))
		return PTR_ERR(mm);

	sub = kzalloc(sizeof(*sub), GFP_KERNEL);
	if (!sub) {
		mmput(mm);
		return -ENOMEM;
	}
	sub->mn.ops = &probe_ops;
	sub->mm = mm;
	sub->pid = pid;
	ret = mmu_notifier_register(&sub->mn, mm);	/* takes its own mmgrab() until unregister */
	mmput(mm);
	if (ret) {
		kfree(sub);
		return ret;
	}
	mutex_lock(&subs_lock);
	list_add(&sub->node, &subs);
	mutex_unlock(&subs_lock);
	return 0;
}

static int subscribe_range(pid_t pid, unsigned long start, unsigned long end, bool twopass)
{
	const struct mmu_interval_notifier_ops *ops = &probe_interval_ops;
	struct interval_subscription *isub;
	struct mm_struct *mm;
	int ret;

	if (end <= start)
		return -EINVAL;
	if (twopass) {
#ifdef MMU_PROBE_TWO_PASS
		ops = &probe_interval_two_pass_ops;
#else
		return -EOPNOTSUPP;	/* this kernel's interval notifier has one pass */
#endif
	}
	mm = pid_mm(pid);
	if (IS_ERR(mm))
		return PTR_ERR(mm);
	isub = kzalloc(sizeof(*isub), GFP_KERNEL);
	if (!isub) {
		mmput(mm);
		return -ENOMEM;
	}
	isub->pid = pid;
	/* Takes its own mmgrab() until remove; registers the mm's notifier machinery if need be. */
	ret = mmu_interval_notifier_insert(&isub->ni, mm, start, end - start, ops);
	mmput(mm);
	if (ret) {
		kfree(isub);
		return ret;
	}
	mutex_lock(&subs_lock);
	list_add(&isub->node, &interval_subs);
	mutex_unlock(&subs_lock);
	return 0;
}

static void unsubscribe_all(void)
{
	struct interval_subscription *isub, *itmp;
	struct subscription *sub, *tmp;

	mutex_lock(&subs_lock);
	list_for_each_entry_safe(sub, tmp, &subs, node) {
		/* Safe after release(): unregister copes with an mm that already exited. */
		mmu_notifier_unregister(&sub->mn, sub->mm);
		list_del(&sub->node);
		kfree(sub);
	}
	list_for_each_entry_safe(isub, itmp, &interval_subs, node) {
		/* Waits for an invalidation in progress; drops the mm reference insert took. */
		mmu_interval_notifier_remove(&isub->ni);
		list_del(&isub->node);
		kfree(isub);
	}
	mutex_unlock(&subs_lock);
}

static ssize_t watch_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	int pid, ret;

	ret = kstrtoint_from_user(buf, len, 10, &pid);
	if (ret)
		return ret;
	ret = subscribe(pid);
	return ret ? ret : len;
}

static const struct file_operations watch_fops = {
	.owner = THIS_MODULE,
	.write = watch_write,
};

static ssize_t watch_range_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	unsigned long start, end;
	char text[80], form[8] = "";
	int pid, ret, n;

	if (len >= sizeof(text))
		return -EINVAL;
	if (copy_from_user(text, buf, len))
		return -EFAULT;
	text[len] = '\0';
	n = sscanf(text, "%d %li %li %7s", &pid, &start, &end, form);
	if (n < 3 || (n == 4 && strcmp(form, "twopass")))
		return -EINVAL;
	ret = subscribe_range(pid, start, end, n == 4);
	return ret ? ret : len;
}

static const struct file_operations watch_range_fops = {
	.owner = THIS_MODULE,
	.write = watch_range_write,
};

static void mirrors_remove_all(void);

static ssize_t clear_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	unsigned long irqflags;

	unsubscribe_all();
	mirrors_remove_all();
	spin_lock_irqsave(&ring_lock, irqflags);
	next_seq = 0;
	memset(counts, 0, sizeof(counts));
	memset(itv_counts, 0, sizeof(itv_counts));
	unknown_events = starts = ends = releases = invalidates = unmatched_ends = after_release = 0;
	itv_starts = itv_finishes = itv_inline = 0;
	spin_unlock_irqrestore(&ring_lock, irqflags);
	return len;
}

static const struct file_operations clear_fops = {
	.owner = THIS_MODULE,
	.write = clear_write,
};

static int events_show(struct seq_file *m, void *v)
{
	unsigned long irqflags;
	u64 first, seq, last;
	struct rec r;

	spin_lock_irqsave(&ring_lock, irqflags);
	last = next_seq;
	spin_unlock_irqrestore(&ring_lock, irqflags);
	first = last > RING_SIZE ? last - RING_SIZE : 0;

	for (seq = first; seq < last; seq++) {
		spin_lock_irqsave(&ring_lock, irqflags);
		r = ring[seq % RING_SIZE];
		spin_unlock_irqrestore(&ring_lock, irqflags);
		if (r.seq != seq)
			continue;	/* overwritten while we printed */
		seq_printf(m, "seq=%llu pid=%d cpid=%d sub=%s kind=%s", r.seq, r.pid, r.cpid,
			   r.interval ? "itv" : "mn", kind_names[r.kind]);
		if (r.kind != REC_RELEASE) {
			if (r.event < ARRAY_SIZE(mmu_probe_event_names) && mmu_probe_event_names[r.event])
				seq_printf(m, " event=%s", mmu_probe_event_names[r.event]);
			else
				seq_printf(m, " event=%u", r.event);
			seq_printf(m, " start=0x%lx end=0x%lx flags=0x%x", r.start, r.end, r.flags);
		}
		seq_putc(m, '\n');
	}
	return 0;
}

static int events_open(struct inode *inode, struct file *file)
{
	/* The whole ring can be several MB of text: let seq_file size its buffer as it grows. */
	return single_open_size(file, events_show, NULL, PAGE_SIZE * 16);
}

static const struct file_operations events_fops = {
	.owner = THIS_MODULE,
	.open = events_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
};

static int counters_show(struct seq_file *m, void *v)
{
	struct interval_subscription *isub;
	struct subscription *sub;
	unsigned long irqflags;
	int i, nsubs = 0, nisubs = 0;

	mutex_lock(&subs_lock);
	list_for_each_entry(sub, &subs, node)
		nsubs++;
	list_for_each_entry(isub, &interval_subs, node)
		nisubs++;
	mutex_unlock(&subs_lock);

	spin_lock_irqsave(&ring_lock, irqflags);
	for (i = 0; i < ARRAY_SIZE(counts); i++)
		if (mmu_probe_event_names[i])
			seq_printf(m, "%s %llu\n", mmu_probe_event_names[i], counts[i]);
	for (i = 0; i < ARRAY_SIZE(itv_counts); i++)
		if (mmu_probe_event_names[i])
			seq_printf(m, "itv_%s %llu\n", mmu_probe_event_names[i], itv_counts[i]);
	seq_printf(m, "unknown %llu\nstarts %llu\nends %llu\nopen %llu\nunmatched_ends %llu\n", unknown_events,
		   starts, ends, starts - ends, unmatched_ends);
	seq_printf(m, "releases %llu\ninvalidates %llu\nafter_release %llu\n", releases, invalidates, after_release);
	seq_printf(m, "itv_starts %llu\nitv_finishes %llu\nitv_inline %llu\n", itv_starts, itv_finishes, itv_inline);
	seq_printf(m, "subscriptions %d\ninterval_subscriptions %d\n", nsubs, nisubs);
	seq_printf(m, "recorded %llu\ndropped %llu\n", next_seq,
		   next_seq > RING_SIZE ? next_seq - RING_SIZE : 0);
	spin_unlock_irqrestore(&ring_lock, irqflags);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(counters);

/* ---- The model driver: a device-side mirror of a range (docs/evidence.md) ---------------------- */

#define MIRROR_MAX_PAGES 4096	/* the tracking array stays a small kmalloc, freed from a callback */
#define NEVENTS ARRAY_SIZE(mmu_probe_event_names)

/* What "mirror" prints: copied out under the mirror's lock, without the lock or notifier around it. */
struct mirror_stats {
	bool valid;			/* the device may use pfns[] */
	bool tracked;			/* pfns[] is allocated */
	u64 received, acted, skipped, accesses, faults, refaults, tracking_frees, tracking_allocs;
	u64 verifies, stale;
	u64 retries;			/* faults that had to look again: mmu_interval_read_retry() was true */
	u64 verify_retries;		/* the same for verify's own lookups */
	u64 ev_received[NEVENTS], ev_skipped[NEVENTS];
	u64 starts, finishes, inline_passes, mapped_between, seq_errors;	/* the two-pass modes' */
};

#ifdef MMU_PROBE_TWO_PASS
#define MIRROR_FINISHES 8	/* a small pool, as include/linux/mmu_notifier.h advises: no allocation in a pass */
#define FLUSH_US 50		/* the device's TLB flush in flight between the passes, wide enough under TCG */

struct mirror_finish {
	struct mmu_interval_notifier_finish base;
	unsigned long seq;		/* the start's cur_seq */
	u64 faults;			/* the mirror's faults at the start: one more by the finish mapped in between */
	bool in_use;
};
#endif

struct mirror {
	struct mmu_interval_notifier ni;
	struct list_head node;		/* on mirrors, under subs_lock, until clear or rmmod */
	struct kref ref;		/* the list's, and one per access/verify in progress */
	struct mutex fault_lock;	/* one device fault or verify at a time, as a driver's fault handler */
	spinlock_t lock;		/* callbacks may not sleep; guards pfns and st */
	int id;
	pid_t pid;
	struct mm_struct *mm;		/* for access/verify only: compared with current->mm, never dereferenced */
	unsigned long start, end;
	bool rw, context, unsafe, noretry;
	bool late;			/* twolate: the sequence moves in the finish pass (a negative control) */
	unsigned long *pfns;		/* per-range tracking: the frames the device maps; NULL when freed */
	struct mirror_stats st;
#ifdef MMU_PROBE_TWO_PASS
	unsigned long last_seq;		/* the highest cur_seq a start saw */
	struct mirror_finish finishes[MIRROR_FINISHES];	/* under lock */
#endif
};

static LIST_HEAD(mirrors);
static int next_mirror_id;

/*
 * What context mode may skip. The protection events only take permission away: PROTECTION_VMA
 * (mprotect, NUMA hinting), PROTECTION_PAGE (writeback's folio_mkclean, fork's COW write-protect),
 * SOFT_DIRTY (clear_refs) leave every page at the frame it had; whatever later moves a page (COW
 * copy, migration, reclaim) sends its own CLEAR/UNMAP/MIGRATE. A read-only mirror never had write
 * permission, so it stays correct. A read-write mirror must drop its write access: never skipped.
 */
static bool mirror_skips(const struct mirror *m, int event)
{
	if (m->unsafe)	/* a negative control: proves that verify catches a policy that skips too much */
		return event != MMU_NOTIFY_RELEASE;
	if (!m->context || m->rw)
		return false;
	return event == MMU_NOTIFY_PROTECTION_VMA || event == MMU_NOTIFY_PROTECTION_PAGE ||
	       event == MMU_NOTIFY_SOFT_DIRTY;
}

/* Tear the device's view down (the caller moved the sequence); the tracking to free, outside the lock. */
static unsigned long *mirror_tear_down(struct mirror *m, int event)
{
	unsigned long *tracking = NULL;

	m->st.acted++;
	m->st.valid = false;
	/* Without the event a driver cannot tell "the range is going away" from "a page moved". */
	if (!m->context || event == MMU_NOTIFY_UNMAP || event == MMU_NOTIFY_RELEASE) {
		tracking = m->pfns;
		m->pfns = NULL;
		if (tracking)
			m->st.tracking_frees++;
		m->st.tracked = false;
	}
	return tracking;
}

static bool mirror_invalidate(struct mmu_interval_notifier *ni, const struct mmu_notifier_range *range,
			      unsigned long cur_seq)
{
	struct mirror *m = container_of(ni, struct mirror, ni);
	int event = range->event;
	unsigned long *tracking;
	unsigned long irqflags;

	spin_lock_irqsave(&m->lock, irqflags);
	m->st.received++;
	if (event >= 0 && event < NEVENTS)
		m->st.ev_received[event]++;
	if (mirror_skips(m, event)) {
		/* No mmu_interval_set_seq() either: a fault in progress stays valid. */
		m->st.skipped++;
		if (event >= 0 && event < NEVENTS)
			m->st.ev_skipped[event]++;
		spin_unlock_irqrestore(&m->lock, irqflags);
		return true;
	}
	mmu_interval_set_seq(ni, cur_seq);
	tracking = mirror_tear_down(m, event);
	spin_unlock_irqrestore(&m->lock, irqflags);
	kfree(tracking);
	return true;
}

static const struct mmu_interval_notifier_ops mirror_ops = {
	.invalidate = mirror_invalidate,
};

#ifdef MMU_PROBE_TWO_PASS
/*
 * The start pass: the device's entries go (a fault that overlaps this must look again, but for twolate) and
 * its TLB flush is issued; the finish pass waits for the flush. Both run inside one
 * mmu_notifier_invalidate_range_start(), the finishes after every subscriber's start
 * (mm/mmu_notifier.c:mn_itree_invalidate, mn_itree_release), before the page tables change.
 */
static bool mirror_invalidate_start(struct mmu_interval_notifier *ni, const struct mmu_notifier_range *range,
				    unsigned long cur_seq, struct mmu_interval_notifier_finish **finish)
{
	struct mirror *m = container_of(ni, struct mirror, ni);
	struct mirror_finish *f = NULL;
	unsigned long *tracking, irqflags;
	int event = range->event, i;

	spin_lock_irqsave(&m->lock, irqflags);
	m->st.received++;
	if (event >= 0 && event < NEVENTS)
		m->st.ev_received[event]++;
	m->st.starts++;
	if (!(cur_seq & 1) || cur_seq < m->last_seq)
		m->st.seq_errors++;
	m->last_seq = max(m->last_seq, cur_seq);
	for (i = 0; i < MIRROR_FINISHES && !f; i++)
		if (!m->finishes[i].in_use)
			f = &m->finishes[i];
	if (f) {
		f->in_use = true;
		f->seq = cur_seq;
		f->faults = m->st.faults;
		*finish = &f->base;
	} else {
		m->st.inline_passes++;	/* no finish to defer to: the whole invalidation here */
	}
	if (!m->late || !f)
		mmu_interval_set_seq(ni, cur_seq);
	tracking = mirror_tear_down(m, event);
	spin_unlock_irqrestore(&m->lock, irqflags);
	kfree(tracking);
	return true;
}

static void mirror_invalidate_finish(struct mmu_interval_notifier_finish *finish)
{
	struct mirror_finish *f = container_of(finish, struct mirror_finish, base);
	struct mirror *m = container_of(finish->notifier, struct mirror, ni);
	unsigned long irqflags;

	udelay(FLUSH_US);
	spin_lock_irqsave(&m->lock, irqflags);
	m->st.finishes++;
	if (m->late)
		mmu_interval_set_seq(&m->ni, f->seq);
	/* A fault completed since the start and left the mirror valid: the flush this waits for predates it. */
	if (m->st.valid && m->st.faults != f->faults)
		m->st.mapped_between++;
	f->in_use = false;
	spin_unlock_irqrestore(&m->lock, irqflags);
}

static const struct mmu_interval_notifier_ops mirror_two_pass_ops = {
	.invalidate_start = mirror_invalidate_start,
	.invalidate_finish = mirror_invalidate_finish,
};
#endif

static struct mirror *mirror_find(int id)
{
	struct mirror *m;

	list_for_each_entry(m, &mirrors, node)
		if (m->id == id)
			return m;
	return NULL;
}

/* The frames of the mirrored pages as the process maps them now (faulting them in, as a device would). */
static int mirror_lookup(struct mirror *m, unsigned long *pfns, unsigned int gup_flags)
{
	unsigned long n = (m->end - m->start) >> PAGE_SHIFT, done = 0;
	struct page *pages[64];

	while (done < n) {
		int chunk = min_t(unsigned long, n - done, ARRAY_SIZE(pages));
		int got = get_user_pages_fast(m->start + (done << PAGE_SHIFT), chunk, gup_flags, pages);
		int i;

		if (got <= 0)
			return got ? got : -EFAULT;
		for (i = 0; i < got; i++) {
			pfns[done + i] = page_to_pfn(pages[i]);
			put_page(pages[i]);
		}
		done += got;
	}
	return 0;
}

/*
 * A device access: a torn-down mirror re-faults (frames looked up again, under the notifier's seq), the
 * way hmm_range_fault() users do. Called with fault_lock held.
 */
static int mirror_access(struct mirror *m)
{
	unsigned long n = (m->end - m->start) >> PAGE_SHIFT, *buf, irqflags, seq;
	bool allocated = false;
	int ret;

	spin_lock_irqsave(&m->lock, irqflags);
	m->st.accesses++;
	if (m->st.valid) {
		spin_unlock_irqrestore(&m->lock, irqflags);
		return 0;
	}
	buf = m->pfns;	/* kept across a CLEAR in context mode: nothing to allocate */
	m->pfns = NULL;
	m->st.tracked = false;
	spin_unlock_irqrestore(&m->lock, irqflags);
	if (!buf) {
		buf = kcalloc(n, sizeof(*buf), GFP_KERNEL);
		if (!buf)
			return -ENOMEM;
		allocated = true;
	}
	for (;;) {
		bool moved;

		seq = mmu_interval_read_begin(&m->ni);
		ret = mirror_lookup(m, buf, m->rw ? FOLL_WRITE : 0);
		if (ret)
			break;
		spin_lock_irqsave(&m->lock, irqflags);
		moved = mmu_interval_read_retry(&m->ni, seq);
		if (moved)
			m->st.retries++;
		if (!moved || m->noretry) {	/* noretry: a driver that never looks at the answer */
			m->pfns = buf;
			m->st.tracked = true;
			m->st.valid = true;
			if (allocated)
				m->st.tracking_allocs++;
			if (m->st.faults++)
				m->st.refaults++;
			spin_unlock_irqrestore(&m->lock, irqflags);
			return 0;
		}
		/* Invalidated while we looked: look again. */
		spin_unlock_irqrestore(&m->lock, irqflags);
		cond_resched();
	}
	spin_lock_irqsave(&m->lock, irqflags);
	m->pfns = buf;
	m->st.tracked = true;
	if (allocated)
		m->st.tracking_allocs++;
	spin_unlock_irqrestore(&m->lock, irqflags);
	return ret;
}

#define VERIFY_TRIES 100	/* then -EBUSY: the process keeps changing the range faster than we can look */

/*
 * Stale: a valid mirror whose frame differs from the one the process maps now (or that is gone). The
 * frames are read under the notifier's seq, like a fault: a lookup that an invalidation overtook would
 * compare a valid mirror refaulted since with frames already replaced, and call a correct mirror stale.
 * Called with fault_lock held.
 */
static int mirror_verify(struct mirror *m)
{
	unsigned long n = (m->end - m->start) >> PAGE_SHIFT, *now, irqflags, i, bad = 0, seq;
	int ret, tries;

	now = kcalloc(n, sizeof(*now), GFP_KERNEL);
	if (!now)
		return -ENOMEM;
	for (tries = 0; tries < VERIFY_TRIES; tries++) {
		seq = mmu_interval_read_begin(&m->ni);
		ret = mirror_lookup(m, now, 0);
		spin_lock_irqsave(&m->lock, irqflags);
		if (!mmu_interval_read_retry(&m->ni, seq))
			break;	/* with the lock held */
		m->st.verify_retries++;
		spin_unlock_irqrestore(&m->lock, irqflags);
		cond_resched();
	}
	if (tries == VERIFY_TRIES) {
		kfree(now);
		return -EBUSY;
	}
	m->st.verifies++;
	if (m->st.valid) {
		for (i = 0; i < n; i++)
			if (ret || !m->pfns || m->pfns[i] != now[i])
				bad++;
		m->st.stale += bad;
	}
	spin_unlock_irqrestore(&m->lock, irqflags);
	kfree(now);
	return 0;
}

static void mirror_free(struct kref *ref)
{
	struct mirror *m = container_of(ref, struct mirror, ref);

	/* Waits for an invalidate callback in progress; none can start after it returns. */
	mmu_interval_notifier_remove(&m->ni);
	kfree(m->pfns);
	kfree(m);
}

static int mirror_create(pid_t pid, unsigned long start, unsigned long end, bool rw, const char *mode)
{
	const struct mmu_interval_notifier_ops *ops = &mirror_ops;
	struct mm_struct *mm;
	struct mirror *m;
	int ret;

	if (end <= start || (start | end) & ~PAGE_MASK || (end - start) >> PAGE_SHIFT > MIRROR_MAX_PAGES)
		return -EINVAL;
	mm = pid_mm(pid);
	if (IS_ERR(mm))
		return PTR_ERR(mm);
	m = kzalloc(sizeof(*m), GFP_KERNEL);
	if (!m) {
		mmput(mm);
		return -ENOMEM;
	}
	spin_lock_init(&m->lock);
	mutex_init(&m->fault_lock);
	kref_init(&m->ref);
	m->pid = pid;
	m->mm = mm;
	m->start = start;
	m->end = end;
	m->rw = rw;
	/* context, or unsafe (which frees tracking like context); noretry acts like blind */
	m->unsafe = !strcmp(mode, "unsafe");
	m->context = !strcmp(mode, "context") || m->unsafe;
	m->noretry = !strcmp(mode, "noretry");
#ifdef MMU_PROBE_TWO_PASS
	m->late = !strcmp(mode, "twolate");
	if (!strncmp(mode, "two", 3))
		ops = &mirror_two_pass_ops;	/* blind, in two passes */
#endif
	ret = mmu_interval_notifier_insert(&m->ni, mm, start, end - start, ops);
	mmput(mm);
	if (ret) {
		kfree(m);
		return ret;
	}
	mutex_lock(&subs_lock);
	m->id = next_mirror_id++;
	list_add_tail(&m->node, &mirrors);
	mutex_unlock(&subs_lock);
	return 0;
}

static void mirrors_remove_all(void)
{
	struct mirror *m, *tmp;

	mutex_lock(&subs_lock);
	list_for_each_entry_safe(m, tmp, &mirrors, node) {
		list_del(&m->node);
		kref_put(&m->ref, mirror_free);	/* an access in progress frees it when it ends */
	}
	next_mirror_id = 0;
	mutex_unlock(&subs_lock);
}

static ssize_t mirror_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	char text[96], perm[4], mode[8];
	unsigned long start, end;
	int pid, ret;

	if (len >= sizeof(text))
		return -EINVAL;
	if (copy_from_user(text, buf, len))
		return -EFAULT;
	text[len] = '\0';
	if (sscanf(text, "%d %li %li %3s %7s", &pid, &start, &end, perm, mode) != 5)
		return -EINVAL;
	if ((strcmp(perm, "ro") && strcmp(perm, "rw")) ||
	    (strcmp(mode, "blind") && strcmp(mode, "context") && strcmp(mode, "unsafe") && strcmp(mode, "noretry") &&
	     strcmp(mode, "twopass") && strcmp(mode, "twolate")))
		return -EINVAL;
	if (!strncmp(mode, "two", 3) && !two_pass)
		return -EOPNOTSUPP;	/* this kernel's interval notifier has one pass */
	ret = mirror_create(pid, start, end, !strcmp(perm, "rw"), mode);
	return ret ? ret : len;
}

static const char *mirror_mode(const struct mirror *m)
{
	if (m->ni.ops != &mirror_ops)
		return m->late ? "twolate" : "twopass";
	return m->unsafe ? "unsafe" : m->noretry ? "noretry" : m->context ? "context" : "blind";
}

static int mirror_show(struct seq_file *s, void *v)
{
	struct mirror_stats *c;
	unsigned long irqflags;
	struct mirror *m;
	int i;

	c = kmalloc(sizeof(*c), GFP_KERNEL);	/* two event arrays: too big for the stack */
	if (!c)
		return -ENOMEM;
	mutex_lock(&subs_lock);
	list_for_each_entry(m, &mirrors, node) {
		/* Only the counters: the lock and the notifier stay where they are. */
		spin_lock_irqsave(&m->lock, irqflags);
		*c = m->st;
		spin_unlock_irqrestore(&m->lock, irqflags);
		seq_printf(s, "id=%d pid=%d start=0x%lx end=0x%lx perm=%s mode=%s valid=%d tracked=%d", m->id, m->pid,
			   m->start, m->end, m->rw ? "rw" : "ro", mirror_mode(m), c->valid, c->tracked);
		seq_printf(s, " received=%llu acted=%llu skipped=%llu accesses=%llu faults=%llu refaults=%llu",
			   c->received, c->acted, c->skipped, c->accesses, c->faults, c->refaults);
		seq_printf(s, " retries=%llu verify_retries=%llu", c->retries, c->verify_retries);
		seq_printf(s, " starts=%llu finishes=%llu inline=%llu mapped_between=%llu seq_errors=%llu", c->starts,
			   c->finishes, c->inline_passes, c->mapped_between, c->seq_errors);
		seq_printf(s, " tracking_frees=%llu tracking_allocs=%llu verifies=%llu stale=%llu events=",
			   c->tracking_frees, c->tracking_allocs, c->verifies, c->stale);
		/* NAME:received:skipped for each event seen, comma-separated */
		for (i = 0; i < NEVENTS; i++)
			if (c->ev_received[i] && mmu_probe_event_names[i])
				seq_printf(s, "%s:%llu:%llu,", mmu_probe_event_names[i], c->ev_received[i],
					   c->ev_skipped[i]);
		seq_putc(s, '\n');
	}
	mutex_unlock(&subs_lock);
	kfree(c);
	return 0;
}

static int mirror_open(struct inode *inode, struct file *file)
{
	return single_open(file, mirror_show, NULL);
}

static const struct file_operations mirror_fops = {
	.owner = THIS_MODULE,
	.open = mirror_open,
	.read = seq_read,
	.write = mirror_write,
	.llseek = seq_lseek,
	.release = single_release,
};

/* "access" and "verify": an id, written by the mirrored process itself (the lookups use its mm). */
static ssize_t mirror_op_write(const char __user *buf, size_t len, int (*op)(struct mirror *))
{
	struct mirror *m;
	int id, ret;

	ret = kstrtoint_from_user(buf, len, 10, &id);
	if (ret)
		return ret;
	mutex_lock(&subs_lock);
	m = mirror_find(id);
	if (!m)
		ret = -ENOENT;
	else if (m->mm != current->mm || m->pid != task_tgid_nr(current))
		ret = -EPERM;
	else
		kref_get(&m->ref);	/* a clear while op runs must not free it under us */
	mutex_unlock(&subs_lock);
	if (ret)
		return ret;
	/* Not under subs_lock: a fault may sleep for long, and clear, show and other mirrors must not wait. */
	mutex_lock(&m->fault_lock);
	ret = op(m);
	mutex_unlock(&m->fault_lock);
	kref_put(&m->ref, mirror_free);
	return ret ? ret : len;
}

static ssize_t access_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	return mirror_op_write(buf, len, mirror_access);
}

static ssize_t verify_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	return mirror_op_write(buf, len, mirror_verify);
}

static const struct file_operations access_fops = {
	.owner = THIS_MODULE,
	.write = access_write,
};

static const struct file_operations verify_fops = {
	.owner = THIS_MODULE,
	.write = verify_write,
};

static int __init mmu_probe_init(void)
{
	ring = vzalloc(sizeof(*ring) * RING_SIZE);
	if (!ring)
		return -ENOMEM;
	dir = debugfs_create_dir("mmu_probe", NULL);
	debugfs_create_file("watch", 0200, dir, NULL, &watch_fops);
	debugfs_create_file("watch_range", 0200, dir, NULL, &watch_range_fops);
	debugfs_create_file("clear", 0200, dir, NULL, &clear_fops);
	debugfs_create_file("events", 0400, dir, NULL, &events_fops);
	debugfs_create_file("counters", 0400, dir, NULL, &counters_fops);
	debugfs_create_file("mirror", 0600, dir, NULL, &mirror_fops);
	debugfs_create_file("access", 0200, dir, NULL, &access_fops);
	debugfs_create_file("verify", 0200, dir, NULL, &verify_fops);
	pr_info("mmu_probe: ready (%zu event names from this kernel's enum)\n", ARRAY_SIZE(mmu_probe_event_names));
	return 0;
}

static void __exit mmu_probe_exit(void)
{
	debugfs_remove_recursive(dir);
	unsubscribe_all();
	mirrors_remove_all();
	mmu_notifier_synchronize();	/* no callback of ours may still run once the module text is gone */
	vfree(ring);
	pr_info("mmu_probe: unloaded\n");
}

module_init(mmu_probe_init);
module_exit(mmu_probe_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Records mmu_notifier invalidations of subscribed processes for the test harness");
