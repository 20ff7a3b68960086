// SPDX-License-Identifier: GPL-2.0
/*
 * gpusvm_mirror: a GPU with no hardware, built on the kernel's GPU SVM library (drivers/gpu/drm/drm_gpusvm.c,
 * compiled into this module from the tree under test as drm_gpusvm_helper.ko would be: DRM_GPUSVM has no
 * prompt, only xe selects it). System memory only: no VRAM, no drm_pagemap, devmem never possible.
 *
 * Each open of /dev/gpusvm_mirror is one GPU VM mirroring the opener's mm (drm_gpusvm_init with current->mm,
 * notifiers of 512 MiB and chunks of 2 MiB, 64 KiB and 4 KiB, as xe). The driver follows the DOC examples of
 * drm_gpusvm.c: a device fault (GSM_IOCTL_READ, ../gpusvm/gpusvm_mirror.h) collects the garbage, then
 * drm_gpusvm_range_find_or_insert(), drm_gpusvm_get_pages(), prepares its own page table from the DMA
 * addresses and commits it under the notifier lock if drm_gpusvm_pages_valid() still holds, else faults
 * again. Its invalidate callback DMA-unmaps every range the invalidation covers and zaps the device's page
 * table; on MMU_NOTIFY_UNMAP alone it also marks the range unmapped (drm_gpusvm_range_set_unmapped) and
 * queues it for the garbage collector: the event is what tells the driver to destroy a range rather than
 * refault it.
 *
 * The device reads memory through its page table: DMA addresses of a device with no IOMMU, checked at load to
 * be the physical addresses (dma-direct), read through the kernel's linear map. So a device that kept a stale
 * mapping reads the old frame's bytes, which the guest program compares with what the CPU reads.
 *
 * Negative controls (GSM_IOCTL_MODE): NOVALID commits a bind without drm_gpusvm_pages_valid(); UNSAFE ignores
 * every invalidation.
 *
 * debugfs gpusvm_mirror/: `events` (every invalidation the callback got: seq, pid, event, range, the GPU SVM
 * ranges it covered, how many it unmapped, how many partially), `counters`, `clear`.
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/device/faux.h>
#include <linux/dma-mapping.h>
#include <linux/miscdevice.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/sched/mm.h>
#include <linux/seq_file.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <drm/drm_device.h>
#include <drm/drm_drv.h>
#include <drm/drm_gpusvm.h>
#include <drm/drm_pagemap.h>

#include "gpusvm_mirror.h"
#include "mmu_probe_events.h" /* mmu_probe_event_names[] by enum mmu_notifier_event, of this tree */

#define GSM_RECORDS 4096	/* the last invalidations kept for debugfs */
#define GSM_FAULT_TIMEOUT (2 * HZ)	/* a device access that keeps losing its pages gives up: -EBUSY */
#define BIND_LATENCY_US 50		/* a modelled page-table write by the device (gsm_prepare_bind) */

struct gsm_range {
	struct drm_gpusvm_range base;
	struct drm_gpusvm_pages pages;
	phys_addr_t *pt;	/* the device's page table: one address a page, prepared outside the lock */
	bool bound;		/* the device maps the range (pt is live); zapped by an invalidation */
	struct list_head gc;	/* on the VM's garbage list after an UNMAP */
};

struct gsm_vm {
	struct drm_gpusvm svm;
	struct mutex lock;		/* drm_gpusvm.c's driver_svm_lock: faults, find_or_insert, remove */
	spinlock_t garbage_lock;	/* the garbage list: filled by the invalidate callback */
	struct list_head garbage;
	u32 mode;			/* enum gsm_mode */
	char *bounce;			/* GSM_MAX_PAGES pages: what the device read, copied out after the lock */
};

struct gsm_record {
	u64 seq;
	pid_t pid;
	u32 event;
	unsigned long start, end;
	u32 ranges, unmapped, partial;
};

static const unsigned long gsm_chunks[] = { SZ_2M, SZ_64K, SZ_4K };
static struct faux_device *gsm_faux;
static struct drm_device *gsm_drm;
static struct dentry *gsm_debugfs;
static DEFINE_SPINLOCK(records_lock);
static struct gsm_record records[GSM_RECORDS];
static u64 recorded, cleared;	/* records written ever; the first still shown */
static atomic64_t invalidations, faults, binds_invalidated, collected, vms_open;

static struct gsm_range *to_gsm_range(struct drm_gpusvm_range *range)
{
	return container_of(range, struct gsm_range, base);
}

static unsigned long range_pages(struct drm_gpusvm_range *range)
{
	return drm_gpusvm_range_size(range) >> PAGE_SHIFT;
}

static struct drm_gpusvm_range *gsm_range_alloc(struct drm_gpusvm *svm)
{
	struct gsm_range *r = kzalloc(sizeof(*r), GFP_KERNEL);

	if (!r)
		return NULL;
	drm_gpusvm_init_pages(&r->pages, gsm_drm);
	INIT_LIST_HEAD(&r->gc);
	return &r->base;
}

static void gsm_range_free(struct drm_gpusvm_range *range)
{
	struct gsm_range *r = to_gsm_range(range);

	drm_gpusvm_free_pages(range->gpusvm, &r->pages, range_pages(range));
	kvfree(r->pt);
	kfree(r);
}

static void gsm_record(const struct mmu_notifier_range *mmu_range, u32 ranges, u32 unmapped, u32 partial)
{
	struct gsm_record *rec;

	spin_lock(&records_lock);
	rec = &records[recorded % GSM_RECORDS];
	*rec = (struct gsm_record){ .seq = recorded, .pid = current->tgid, .event = mmu_range->event,
				    .start = mmu_range->start, .end = mmu_range->end, .ranges = ranges,
				    .unmapped = unmapped, .partial = partial };
	recorded++;
	spin_unlock(&records_lock);
}

/* Called by drm_gpusvm_notifier_invalidate() with the notifier lock held for writing and the sequence set. */
static void gsm_invalidate(struct drm_gpusvm *svm, struct drm_gpusvm_notifier *notifier,
			   const struct mmu_notifier_range *mmu_range)
{
	struct gsm_vm *vm = container_of(svm, struct gsm_vm, svm);
	const struct drm_gpusvm_ctx ctx = { .in_notifier = true };
	struct drm_gpusvm_range *range = NULL;
	u32 ranges = 0, unmapped = 0, partial = 0;

	atomic64_inc(&invalidations);
	drm_gpusvm_for_each_range(range, notifier, mmu_range->start, mmu_range->end) {
		struct gsm_range *r = to_gsm_range(range);

		ranges++;
		if (READ_ONCE(vm->mode) == GSM_UNSAFE)
			continue;
		WRITE_ONCE(r->bound, false);
		drm_gpusvm_unmap_pages(svm, &r->pages, range_pages(range), &ctx);
		if (mmu_range->event != MMU_NOTIFY_UNMAP)
			continue;	/* the CPU still maps the range: the next device access refaults it */
		if (range->flags.unmapped)
			continue;	/* queued once: the collector may be removing it right now */
		drm_gpusvm_range_set_unmapped(range, &r->pages, 1, mmu_range);
		unmapped++;
		partial += range->flags.partial_unmap;
		spin_lock(&vm->garbage_lock);
		drm_gpusvm_range_get(range);	/* the garbage list's reference */
		list_add_tail(&r->gc, &vm->garbage);
		spin_unlock(&vm->garbage_lock);
	}
	gsm_record(mmu_range, ranges, unmapped, partial);
}

static const struct drm_gpusvm_ops gsm_ops = {
	.range_alloc = gsm_range_alloc,
	.range_free = gsm_range_free,
	.invalidate = gsm_invalidate,
};

/* The garbage collector of the DOC: ranges an UNMAP took leave the tree, DMA-unmapped first. */
static void gsm_collect_garbage(struct gsm_vm *vm, bool remove)
{
	struct gsm_range *r;

	lockdep_assert_held(&vm->lock);
	spin_lock(&vm->garbage_lock);
	while ((r = list_first_entry_or_null(&vm->garbage, struct gsm_range, gc))) {
		list_del_init(&r->gc);
		spin_unlock(&vm->garbage_lock);
		if (remove) {
			drm_gpusvm_unmap_pages(&vm->svm, &r->pages, range_pages(&r->base),
					       &(struct drm_gpusvm_ctx){ .in_notifier = false });
			drm_gpusvm_range_remove(&vm->svm, &r->base);
			atomic64_inc(&collected);
		}
		drm_gpusvm_range_put(&r->base);
		spin_lock(&vm->garbage_lock);
	}
	spin_unlock(&vm->garbage_lock);
}

/* The device's page table of a range, from the DMA addresses get_pages left: outside the notifier lock, as a
 * driver allocates and writes its page tables before it commits them. */
static int gsm_prepare_bind(struct gsm_range *r)
{
	unsigned long n = range_pages(&r->base), i, j, k;

	if (!r->pt) {
		r->pt = kvmalloc_array(n, sizeof(*r->pt), GFP_KERNEL);
		if (!r->pt)
			return -ENOMEM;
	}
	for (i = 0, j = 0; i < n; j++) {
		const struct drm_pagemap_addr *a = &r->pages.dma_addr[j];

		for (k = 0; k < (1UL << a->order) && i + k < n; k++)
			r->pt[i + k] = a->addr + k * PAGE_SIZE;	/* dma-direct: the physical address */
		i += 1UL << a->order;
	}
	/* What a GPU's bind costs beyond that: a job on its copy engine writes the page table, and the driver waits
	 * for it. Modelled, so that an invalidation can come between get_pages and the commit as on hardware. */
	usleep_range(BIND_LATENCY_US, 2 * BIND_LATENCY_US);
	return 0;
}

/* A device fault at va, for an access of [start, end): the range bound, or an ERR_PTR. */
static struct gsm_range *gsm_fault(struct gsm_vm *vm, unsigned long va, unsigned long start, unsigned long end,
				   struct gsm_cmd *cmd)
{
	const struct drm_gpusvm_ctx ctx = { .read_only = 1 };	/* the device only reads */
	unsigned long deadline = jiffies + GSM_FAULT_TIMEOUT;
	struct drm_gpusvm_range *range;
	struct gsm_range *r;
	bool valid;
	int err;

	for (;;) {
		if (time_after(jiffies, deadline))
			return ERR_PTR(-EBUSY);
		gsm_collect_garbage(vm, true);	/* UNMAPs first, so that the ranges looked up are current */
		range = drm_gpusvm_range_find_or_insert(&vm->svm, va, start, end, &ctx);
		if (IS_ERR(range))
			return ERR_PTR(PTR_ERR(range) == -ENOENT ? -EFAULT : PTR_ERR(range));	/* no VMA */
		r = to_gsm_range(range);
		if (READ_ONCE(r->bound))
			return r;
		cmd->faults++;
		atomic64_inc(&faults);
		err = drm_gpusvm_get_pages(&vm->svm, &r->pages, vm->svm.mm, &range->notifier->notifier,
					   drm_gpusvm_range_start(range), drm_gpusvm_range_end(range), &ctx);
		if (err == -EFAULT || err == -EPERM)
			continue;	/* the CPU mapping changed (an UNMAP marked the range): look it up again */
		if (err)
			return ERR_PTR(err);
		err = gsm_prepare_bind(r);
		if (err)
			return ERR_PTR(err);
		drm_gpusvm_notifier_lock(&vm->svm);
		valid = drm_gpusvm_pages_valid(&vm->svm, &r->pages);
		if (!valid) {
			cmd->retries++;
			atomic64_inc(&binds_invalidated);
		}
		if (valid || READ_ONCE(vm->mode) == GSM_NOVALID) {
			WRITE_ONCE(r->bound, true);
			drm_gpusvm_notifier_unlock(&vm->svm);
			return r;
		}
		drm_gpusvm_notifier_unlock(&vm->svm);
	}
}

/* GSM_IOCTL_READ: the device reads the pages through its page table, faulting the ranges it does not map. */
static long gsm_read(struct gsm_vm *vm, struct gsm_cmd *cmd)
{
	unsigned long start = cmd->addr, end, va;
	long err = 0;

	if (!cmd->npages || cmd->npages > GSM_MAX_PAGES || !PAGE_ALIGNED(start))
		return -EINVAL;
	end = start + cmd->npages * PAGE_SIZE;
	if (end < start)
		return -EINVAL;
	mutex_lock(&vm->lock);
	for (va = start; va < end;) {
		struct gsm_range *r = gsm_fault(vm, va, start, end, cmd);
		unsigned long rstart, rend;

		if (IS_ERR(r)) {
			err = PTR_ERR(r);
			break;
		}
		rstart = drm_gpusvm_range_start(&r->base);
		rend = min(end, drm_gpusvm_range_end(&r->base));
		drm_gpusvm_notifier_lock(&vm->svm);
		if (!READ_ONCE(r->bound)) {	/* zapped since the fault: fault again */
			drm_gpusvm_notifier_unlock(&vm->svm);
			cmd->retries++;
			continue;
		}
		for (; va < rend; va += PAGE_SIZE)
			memcpy(vm->bounce + (va - start), phys_to_virt(r->pt[(va - rstart) >> PAGE_SHIFT]), PAGE_SIZE);
		drm_gpusvm_notifier_unlock(&vm->svm);
	}
	mutex_unlock(&vm->lock);
	if (!err && copy_to_user(u64_to_user_ptr(cmd->ptr), vm->bounce, cmd->npages * PAGE_SIZE))
		err = -EFAULT;
	return err;
}

static long gsm_ranges(struct gsm_vm *vm, struct gsm_ranges __user *uarg)
{
	struct gsm_ranges *out = kzalloc(sizeof(*out), GFP_KERNEL);
	struct drm_gpusvm_notifier *notifier;
	long err = 0;

	if (!out)
		return -ENOMEM;
	mutex_lock(&vm->lock);
	drm_gpusvm_notifier_lock(&vm->svm);
	drm_gpusvm_for_each_notifier(notifier, &vm->svm, 0, LONG_MAX) {
		struct drm_gpusvm_range *range = NULL;

		drm_gpusvm_for_each_range(range, notifier, 0, LONG_MAX) {
			struct gsm_range_info *info = &out->range[out->count];

			if (out->count == GSM_MAX_RANGES) {
				err = -E2BIG;
				break;
			}
			*info = (struct gsm_range_info){
				.start = drm_gpusvm_range_start(range), .end = drm_gpusvm_range_end(range),
				.valid = drm_gpusvm_pages_valid(&vm->svm, &to_gsm_range(range)->pages),
				.unmapped = range->flags.unmapped, .partial_unmap = range->flags.partial_unmap };
			out->count++;
		}
	}
	drm_gpusvm_notifier_unlock(&vm->svm);
	mutex_unlock(&vm->lock);
	if (!err && copy_to_user(uarg, out, sizeof(*out)))
		err = -EFAULT;
	kfree(out);
	return err;
}

static long gsm_ioctl(struct file *file, unsigned int request, unsigned long arg)
{
	struct gsm_vm *vm = file->private_data;
	void __user *uarg = (void __user *)arg;
	struct gsm_cmd cmd;
	u32 mode;
	long err;

	if (current->mm != vm->svm.mm)
		return -EPERM;	/* the VM mirrors its opener's mm: another process's addresses mean nothing here */
	switch (request) {
	case GSM_IOCTL_READ:
		if (copy_from_user(&cmd, uarg, sizeof(cmd)))
			return -EFAULT;
		cmd.faults = cmd.retries = 0;
		err = gsm_read(vm, &cmd);
		if (copy_to_user(uarg, &cmd, sizeof(cmd)))
			return -EFAULT;
		return err;
	case GSM_IOCTL_RANGES:
		return gsm_ranges(vm, uarg);
	case GSM_IOCTL_MODE:
		if (get_user(mode, (u32 __user *)uarg))
			return -EFAULT;
		if (mode > GSM_UNSAFE)
			return -EINVAL;
		WRITE_ONCE(vm->mode, mode);
		return 0;
	}
	return -ENOTTY;
}

static int gsm_open(struct inode *inode, struct file *file)
{
	struct gsm_vm *vm;
	int err;

	if (!current->mm)
		return -EINVAL;
	vm = kzalloc(sizeof(*vm), GFP_KERNEL);
	if (!vm)
		return -ENOMEM;
	vm->bounce = kvmalloc(GSM_MAX_PAGES * PAGE_SIZE, GFP_KERNEL);
	if (!vm->bounce) {
		kfree(vm);
		return -ENOMEM;
	}
	mutex_init(&vm->lock);
	spin_lock_init(&vm->garbage_lock);
	INIT_LIST_HEAD(&vm->garbage);
	err = drm_gpusvm_init(&vm->svm, "gpusvm_mirror", current->mm, 0, TASK_SIZE, SZ_512M, &gsm_ops,
			      gsm_chunks, ARRAY_SIZE(gsm_chunks));
	if (err) {
		kvfree(vm->bounce);
		kfree(vm);
		return err;
	}
	drm_gpusvm_driver_set_lock(&vm->svm, &vm->lock);
	file->private_data = vm;
	atomic64_inc(&vms_open);
	return 0;
}

static int gsm_release(struct inode *inode, struct file *file)
{
	struct gsm_vm *vm = file->private_data;

	mutex_lock(&vm->lock);
	gsm_collect_garbage(vm, true);
	drm_gpusvm_fini(&vm->svm);	/* removes the notifiers first: no invalidation after it */
	gsm_collect_garbage(vm, false);	/* ranges queued before that, removed by fini: our references */
	mutex_unlock(&vm->lock);
	kvfree(vm->bounce);
	kfree(vm);
	atomic64_dec(&vms_open);
	return 0;
}

static const struct file_operations gsm_fops = {
	.owner = THIS_MODULE,
	.open = gsm_open,
	.release = gsm_release,
	.unlocked_ioctl = gsm_ioctl,
};

static struct miscdevice gsm_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "gpusvm_mirror",
	.fops = &gsm_fops,
	.mode = 0600,
};

static const char *event_name(u32 event)
{
	return event < ARRAY_SIZE(mmu_probe_event_names) && mmu_probe_event_names[event] ?
	       mmu_probe_event_names[event] : "UNKNOWN";
}

static int events_show(struct seq_file *s, void *unused)
{
	u64 seq, last;

	spin_lock(&records_lock);
	last = recorded;
	seq = max3(cleared, last > GSM_RECORDS ? last - GSM_RECORDS : 0, (u64)0);
	spin_unlock(&records_lock);
	for (; seq < last; seq++) {
		struct gsm_record rec;

		spin_lock(&records_lock);
		rec = records[seq % GSM_RECORDS];
		spin_unlock(&records_lock);
		if (rec.seq != seq)
			continue;	/* overwritten since */
		seq_printf(s, "seq=%llu pid=%d event=%s start=%#lx end=%#lx ranges=%u unmapped=%u partial=%u\n",
			   rec.seq, rec.pid, event_name(rec.event), rec.start, rec.end, rec.ranges, rec.unmapped,
			   rec.partial);
	}
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(events);

static int counters_show(struct seq_file *s, void *unused)
{
	seq_printf(s, "recorded %llu\ninvalidations %lld\nfaults %lld\nbinds_invalidated %lld\ncollected %lld\n"
		   "vms_open %lld\n", READ_ONCE(recorded), atomic64_read(&invalidations), atomic64_read(&faults),
		   atomic64_read(&binds_invalidated), atomic64_read(&collected), atomic64_read(&vms_open));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(counters);

static ssize_t clear_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	spin_lock(&records_lock);
	cleared = recorded;
	spin_unlock(&records_lock);
	return len;
}

static const struct file_operations clear_fops = {
	.owner = THIS_MODULE,
	.write = clear_write,
};

/* The device reads through its DMA addresses as physical ones: true of dma-direct with no offset, which is what
 * a device without an IOMMU gets. Checked once, with a page of our own. */
static int gsm_check_dma_is_phys(struct device *dev)
{
	struct page *page = alloc_page(GFP_KERNEL);
	dma_addr_t addr;
	int err = 0;

	if (!page)
		return -ENOMEM;
	addr = dma_map_page(dev, page, 0, PAGE_SIZE, DMA_TO_DEVICE);
	if (dma_mapping_error(dev, addr))
		err = -EIO;
	else if (addr != page_to_phys(page))
		err = -EOPNOTSUPP;
	if (!dma_mapping_error(dev, addr))
		dma_unmap_page(dev, addr, PAGE_SIZE, DMA_TO_DEVICE);
	__free_page(page);
	if (err)
		pr_err("gpusvm_mirror: DMA addresses are not physical ones here (%d): the device could not read\n", err);
	return err;
}

static const struct drm_driver gsm_driver = {
	.name = "gpusvm_mirror",
	.desc = "GPU SVM mirror with no hardware",
};

static int __init gsm_init(void)
{
	int err;

	gsm_faux = faux_device_create("gpusvm_mirror", NULL, NULL);
	if (!gsm_faux)
		return -ENODEV;
	err = dma_coerce_mask_and_coherent(&gsm_faux->dev, DMA_BIT_MASK(64));
	if (!err)
		err = gsm_check_dma_is_phys(&gsm_faux->dev);
	if (err)
		goto out_faux;
	/* A drm_device that is never registered: what drm_gpusvm_pages needs (its ->dev maps DMA) */
	gsm_drm = drm_dev_alloc(&gsm_driver, &gsm_faux->dev);
	if (IS_ERR(gsm_drm)) {
		err = PTR_ERR(gsm_drm);
		goto out_faux;
	}
	err = misc_register(&gsm_misc);
	if (err)
		goto out_drm;
	gsm_debugfs = debugfs_create_dir("gpusvm_mirror", NULL);
	debugfs_create_file("events", 0400, gsm_debugfs, NULL, &events_fops);
	debugfs_create_file("counters", 0400, gsm_debugfs, NULL, &counters_fops);
	debugfs_create_file("clear", 0200, gsm_debugfs, NULL, &clear_fops);
	pr_info("gpusvm_mirror: ready (%zu event names from this kernel's enum)\n", ARRAY_SIZE(mmu_probe_event_names));
	return 0;

out_drm:
	drm_dev_put(gsm_drm);
out_faux:
	faux_device_destroy(gsm_faux);
	return err;
}

static void __exit gsm_exit(void)
{
	debugfs_remove_recursive(gsm_debugfs);
	misc_deregister(&gsm_misc);
	drm_dev_put(gsm_drm);
	faux_device_destroy(gsm_faux);
}

module_init(gsm_init);
module_exit(gsm_exit);
MODULE_DESCRIPTION("A GPU with no hardware on the kernel's GPU SVM library, for the harness");
MODULE_LICENSE("GPL");
