/*
 * dcac_blocks: the block profile. Every translated block executed after the arm marker gets a counter
 * (one inline add per execution); at each marker the plugin prints how often every block ran since the
 * previous marker, so the host can weigh each block's cost by its count, per region.
 *
 * A block is keyed by its address and its bytes: qemu may translate the same code more than once (after a
 * flush, or a block entered part-way through a loop), and the same address may hold other code later.
 *
 * Output (qemu's plugin log):
 *   marker <id>                                 the guest's write(DCAC_MARKER_FD, buf, id)
 *   block <index> <vaddr> <sizes> <hex bytes>   once, before a block's first count line
 *                                               (sizes: each instruction's length in bytes, '.'-separated)
 *   count <index> <executions>                  executions since the previous marker (non-zero only)
 * Options: arm=<id> (instrument nothing until marker <id>, then flush the translated code and start);
 * write_nr=<n> (the guest's write system call number: 64 on aarch64, the default, 1 on x86-64).
 * One guest thread: the counters are not atomic.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <glib.h>

#include <qemu-plugin.h>

#include "dcac_options.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define DCAC_MARKER_FD 252076

typedef struct {
    uint64_t vaddr;
    GString *sizes;        /* "4.4.4" */
    GString *hex;          /* the block's bytes */
    uint64_t count;        /* executions so far (inline add) */
    uint64_t reported;     /* count at the last marker */
    bool defined;          /* its "block" line was printed */
} Block;

static GHashTable *by_key;       /* "vaddr:hex" -> Block* */
static GPtrArray *blocks;        /* index -> Block* */
static GMutex lock;
static int64_t write_nr = 64;
static int64_t arm_id = -1;
static bool armed;
static qemu_plugin_id_t plugin_id;

static void register_all(qemu_plugin_id_t id);

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    GString *sizes = g_string_new(NULL);
    GString *hex = g_string_new(NULL);
    for (size_t i = 0; i < n; i++) {   /* the bytes are valid only during this callback: copy them */
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint8_t *data = qemu_plugin_insn_data(insn);
        size_t len = qemu_plugin_insn_size(insn);
        g_string_append_printf(sizes, i ? ".%zu" : "%zu", len);
        for (size_t j = 0; j < len; j++) {
            g_string_append_printf(hex, "%02x", data[j]);
        }
    }
    uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
    g_autofree gchar *key = g_strdup_printf("%" PRIx64 ":%s", vaddr, hex->str);
    g_mutex_lock(&lock);
    Block *b = g_hash_table_lookup(by_key, key);
    if (b == NULL) {
        b = g_new0(Block, 1);
        b->vaddr = vaddr;
        b->sizes = sizes;
        b->hex = hex;
        g_hash_table_insert(by_key, g_strdup(key), b);
        g_ptr_array_add(blocks, b);
    } else {
        g_string_free(sizes, TRUE);
        g_string_free(hex, TRUE);
    }
    g_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
}

static void report(int64_t id)
{
    GString *out = g_string_new(NULL);
    g_string_append_printf(out, "marker %" PRId64 "\n", id);
    g_mutex_lock(&lock);
    for (guint i = 0; i < blocks->len; i++) {
        Block *b = g_ptr_array_index(blocks, i);
        uint64_t delta = b->count - b->reported;
        if (delta == 0) {
            continue;
        }
        if (!b->defined) {
            g_string_append_printf(out, "block %u %" PRIx64 " %s %s\n", i, b->vaddr, b->sizes->str, b->hex->str);
            b->defined = true;
        }
        g_string_append_printf(out, "count %u %" PRIu64 "\n", i, delta);
        b->reported = b->count;
    }
    g_mutex_unlock(&lock);
    qemu_plugin_outs(out->str);
    g_string_free(out, TRUE);
}

static void vcpu_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                         uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                         uint64_t a8)
{
    if (num != write_nr || a1 != DCAC_MARKER_FD) {
        return;
    }
    report((int64_t)a3);
    if (!armed && (int64_t)a3 == arm_id) {
        armed = true;
        qemu_plugin_reset(plugin_id, register_all);   /* flush the code, then register_all */
    }
}

static void register_all(qemu_plugin_id_t id)
{
    if (armed) {
        qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    }
    qemu_plugin_register_vcpu_syscall_cb(id, vcpu_syscall);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    if (dcac_parse_options("dcac_blocks", argc, argv, &write_nr, &arm_id) != 0) {
        return -1;
    }
    by_key = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    blocks = g_ptr_array_new();
    plugin_id = id;
    armed = arm_id < 0;
    register_all(id);
    return 0;
}
