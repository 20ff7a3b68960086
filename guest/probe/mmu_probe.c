// SPDX-License-Identifier: GPL-2.0
/*
 * mmu_probe: a test-only mmu_notifier subscriber.
 *
 * Writing a PID to /sys/kernel/debug/mmu_probe/watch subscribes a classic mmu_notifier to that
 * process's mm. Every invalidate_range_start/end and release is appended to a fixed ring, which
 * /sys/kernel/debug/mmu_probe/events prints one record a line:
 *
 *   seq=N pid=P cpid=C kind=start|end|release event=NAME start=0x.. end=0x.. flags=0x..
 *
 * pid is the subscribed process, cpid the task that caused the callback (e.g. kcompactd), NAME the
 * kernel's own enum mmu_notifier_event name without MMU_NOTIFY_ (table generated from this tree's
 * include/linux/mmu_notifier.h into mmu_probe_events.h). Writing anything to "clear" drops all
 * subscriptions and records. "counters" prints per-event totals, unpaired starts and drops.
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

enum rec_kind { REC_START, REC_END, REC_RELEASE };
static const char *const kind_names[] = { "start", "end", "release" };

struct rec {
	u64 seq;
	pid_t pid, cpid;
	u8 kind, event, flags;
	unsigned long start, end;
};

struct subscription {
	struct mmu_notifier mn;
	struct mm_struct *mm;
	pid_t pid;
	struct list_head node;
};

static DEFINE_SPINLOCK(ring_lock);	/* callbacks may run where sleeping is not allowed */
static struct rec *ring;
static u64 next_seq;			/* records ever written; the ring keeps the last RING_SIZE */
static u64 counts[ARRAY_SIZE(mmu_probe_event_names)];
static u64 unknown_events, starts, ends, releases;

static DEFINE_MUTEX(subs_lock);
static LIST_HEAD(subs);
static struct dentry *dir;

static void record(struct subscription *sub, enum rec_kind kind, int event, unsigned long start,
		   unsigned long end, unsigned int flags)
{
	unsigned long irqflags;
	struct rec *r;

	spin_lock_irqsave(&ring_lock, irqflags);
	r = &ring[next_seq % RING_SIZE];
	r->seq = next_seq++;
	r->pid = sub->pid;
	r->cpid = task_tgid_nr(current);
	r->kind = kind;
	r->event = event;
	r->flags = flags;
	r->start = start;
	r->end = end;
	if (kind == REC_START) {
		starts++;
		if (event >= 0 && event < ARRAY_SIZE(counts))
			counts[event]++;
		else
			unknown_events++;
	} else if (kind == REC_END) {
		ends++;
	} else {
		releases++;
	}
	spin_unlock_irqrestore(&ring_lock, irqflags);
}

static int probe_invalidate_range_start(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	record(container_of(mn, struct subscription, mn), REC_START, range->event, range->start,
	       range->end, range->flags);
	return 0;
}

static void probe_invalidate_range_end(struct mmu_notifier *mn, const struct mmu_notifier_range *range)
{
	record(container_of(mn, struct subscription, mn), REC_END, range->event, range->start,
	       range->end, range->flags);
}

static void probe_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	record(container_of(mn, struct subscription, mn), REC_RELEASE, 0, 0, 0, 0);
}

static const struct mmu_notifier_ops probe_ops = {
	.invalidate_range_start = probe_invalidate_range_start,
	.invalidate_range_end = probe_invalidate_range_end,
	.release = probe_release,
};

static int subscribe(pid_t pid)
{
	struct subscription *sub;
	struct task_struct *task;
	struct mm_struct *mm;
	int ret;

	task = get_pid_task(find_get_pid(pid), PIDTYPE_PID);
	if (!task)
		return -ESRCH;
	mm = get_task_mm(task);
	put_task_struct(task);
	if (!mm)
		return -EINVAL;	/* a kernel thread, or a process already exiting */

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

static void unsubscribe_all(void)
{
	struct subscription *sub, *tmp;

	mutex_lock(&subs_lock);
	list_for_each_entry_safe(sub, tmp, &subs, node) {
		/* Safe after release(): unregister copes with an mm that already exited. */
		mmu_notifier_unregister(&sub->mn, sub->mm);
		list_del(&sub->node);
		kfree(sub);
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

static ssize_t clear_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	unsigned long irqflags;

	unsubscribe_all();
	spin_lock_irqsave(&ring_lock, irqflags);
	next_seq = 0;
	memset(counts, 0, sizeof(counts));
	unknown_events = starts = ends = releases = 0;
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
		seq_printf(m, "seq=%llu pid=%d cpid=%d kind=%s", r.seq, r.pid, r.cpid, kind_names[r.kind]);
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
	unsigned long irqflags;
	int i;

	spin_lock_irqsave(&ring_lock, irqflags);
	for (i = 0; i < ARRAY_SIZE(counts); i++)
		if (mmu_probe_event_names[i])
			seq_printf(m, "%s %llu\n", mmu_probe_event_names[i], counts[i]);
	seq_printf(m, "unknown %llu\nstarts %llu\nends %llu\nreleases %llu\n", unknown_events, starts, ends,
		   releases);
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
