// SPDX-License-Identifier: GPL-2.0
/* Blocks in its init for 10 minutes: a boot that never reaches the ready marker (boot-timeout tests). */
#include <linux/delay.h>
#include <linux/kernel.h>
#include <linux/module.h>

static int __init fault_stall_init(void)
{
	pr_info("fault_stall: stalling boot on purpose\n");
	ssleep(600);
	return 0;
}

module_init(fault_stall_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Test-only: stalls boot");
