// SPDX-License-Identifier: GPL-2.0
/*
 * Test-only faults on demand, for the harness's own fault-injection tests. Writing to
 * /sys/kernel/debug/fault_inject/<name> does:
 *   warn   WARN_ON(1): a non-fatal splat in an otherwise passing test
 *   oops   a NULL pointer write: an oops that kills the writer, kernel goes on
 *   panic  panic()
 *   hang   sleeps uninterruptibly for the number of seconds written (a wedged command)
 *   spin   busy-waits in the kernel for the number of seconds written, never yielding (a wedged CPU)
 *   use_after_free  reads a kmalloc'ed object after kfree: silent, except under KASAN
 */
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

static struct dentry *dir;

static ssize_t warn_write(struct file *f, const char __user *buf, size_t len, loff_t *ppos)
{
	WARN_ON(1);
	return len;
}

static ssize_t oops_write(struct file *f, const char __user *buf, size_t len, loff_t *ppos)
{
	*(volatile int *)NULL = 1;
	return len;
}

static ssize_t panic_write(struct file *f, const char __user *buf, size_t len, loff_t *ppos)
{
	panic("fault_inject: panic on request");
	return len;
}

static ssize_t hang_write(struct file *f, const char __user *buf, size_t len, loff_t *ppos)
{
	unsigned int seconds;
	int ret = kstrtouint_from_user(buf, len, 10, &seconds);

	if (ret)
		return ret;
	set_current_state(TASK_UNINTERRUPTIBLE);
	schedule_timeout(seconds * HZ);
	return len;
}

static ssize_t spin_write(struct file *f, const char __user *buf, size_t len, loff_t *ppos)
{
	unsigned int seconds;
	unsigned long end;
	int ret = kstrtouint_from_user(buf, len, 10, &seconds);

	if (ret)
		return ret;
	end = jiffies + seconds * HZ;
	while (time_before(jiffies, end))
		mdelay(1);	/* the CPU sits in the kernel's delay loop: a post-mortem names it */
	return len;
}

static ssize_t use_after_free_write(struct file *f, const char __user *buf, size_t len, loff_t *ppos)
{
	volatile char *p = kmalloc(64, GFP_KERNEL);
	char c;

	if (!p)
		return -ENOMEM;
	kfree((void *)p);
	c = p[8];	/* the fault: a read of freed memory (volatile, so the compiler keeps it) */
	(void)c;
	return len;
}

#define FAULT(name) { #name, { .owner = THIS_MODULE, .write = name##_write } }
static const struct {
	const char *name;
	struct file_operations fops;
} faults[] = { FAULT(warn), FAULT(oops), FAULT(panic), FAULT(hang), FAULT(spin), FAULT(use_after_free) };

static int __init fault_inject_init(void)
{
	int i;

	dir = debugfs_create_dir("fault_inject", NULL);
	for (i = 0; i < ARRAY_SIZE(faults); i++)
		debugfs_create_file(faults[i].name, 0200, dir, NULL, &faults[i].fops);
	return 0;
}

static void __exit fault_inject_exit(void)
{
	debugfs_remove_recursive(dir);
}

module_init(fault_inject_init);
module_exit(fault_inject_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Test-only: WARN, oops, panic, hang, spin and use-after-free on request");
