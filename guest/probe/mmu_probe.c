// SPDX-License-Identifier: GPL-2.0
/*
 * mmu_probe: a test-only mmu_notifier subscriber.
 *
 * Two kinds of subscriber, as drivers use them:
 *   watch        "PID": a classic mmu_notifier (invalidate_range_start/end, release) on its mm
 *   watch_range  "PID START END": an mmu_interval_notifier on [START, END) of its mm (decimal or 0x)
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
 * Builds on 6.1 (struct mmu_notifier_range has a vma there) and 6.12: only named fields are read.
 */
#include <linux/debugfs.h>
#include <linux/kernel.h>
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

#include "mmu_probe_events.h" /* mmu_probe_event_names[], indexed by enum mmu_notifier_event */

#define RING_SIZE (1 << 16)

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
	struct list_head node;
};

struct interval_subscription {
	struct mmu_interval_notifier ni;
	pid_t pid;
	struct list_head node;
};

static DEFINE_SPINLOCK(ring_lock);	/* callbacks may run where sleeping is not allowed */
static struct rec *ring;
static u64 next_seq;			/* records ever written; the ring keeps the last RING_SIZE */
static u64 counts[ARRAY_SIZE(mmu_probe_event_names)];	/* classic starts by event */
static u64 itv_counts[ARRAY_SIZE(mmu_probe_event_names)];	/* interval invalidations by event */
static u64 unknown_events, starts, ends, releases, invalidates, unmatched_ends;

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

static int probe_invalidate_range_start(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	record(container_of(mn, struct subscription, mn)->pid, REC_START, range);
	return 0;
}

static void probe_invalidate_range_end(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	record(container_of(mn, struct subscription, mn)->pid, REC_END, range);
}

static void probe_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	record(container_of(mn, struct subscription, mn)->pid, REC_RELEASE, NULL);
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

static int subscribe_range(pid_t pid, unsigned long start, unsigned long end)
{
	struct interval_subscription *isub;
	struct mm_struct *mm;
	int ret;

	if (end <= start)
		return -EINVAL;
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
	ret = mmu_interval_notifier_insert(&isub->ni, mm, start, end - start, &probe_interval_ops);
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
	char text[80];
	int pid, ret;

	if (len >= sizeof(text))
		return -EINVAL;
	if (copy_from_user(text, buf, len))
		return -EFAULT;
	text[len] = '\0';
	if (sscanf(text, "%d %li %li", &pid, &start, &end) != 3)
		return -EINVAL;
	ret = subscribe_range(pid, start, end);
	return ret ? ret : len;
}

static const struct file_operations watch_range_fops = {
	.owner = THIS_MODULE,
	.write = watch_range_write,
};

static ssize_t clear_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	unsigned long irqflags;

	unsubscribe_all();
	spin_lock_irqsave(&ring_lock, irqflags);
	next_seq = 0;
	memset(counts, 0, sizeof(counts));
	memset(itv_counts, 0, sizeof(itv_counts));
	unknown_events = starts = ends = releases = invalidates = unmatched_ends = 0;
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
	seq_printf(m, "releases %llu\ninvalidates %llu\n", releases, invalidates);
	seq_printf(m, "subscriptions %d\ninterval_subscriptions %d\n", nsubs, nisubs);
	seq_printf(m, "recorded %llu\ndropped %llu\n", next_seq,
		   next_seq > RING_SIZE ? next_seq - RING_SIZE : 0);
	spin_unlock_irqrestore(&ring_lock, irqflags);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(counters);

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
	pr_info("mmu_probe: ready (%zu event names from this kernel's enum)\n", ARRAY_SIZE(mmu_probe_event_names));
	return 0;
}

static void __exit mmu_probe_exit(void)
{
	debugfs_remove_recursive(dir);
	unsubscribe_all();
	mmu_notifier_synchronize();	/* no callback of ours may still run once the module text is gone */
	vfree(ring);
	pr_info("mmu_probe: unloaded\n");
}

module_init(mmu_probe_init);
module_exit(mmu_probe_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Records mmu_notifier invalidations of subscribed processes for the test harness");
