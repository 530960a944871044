/*
 * dcac marker support, inserted into Debian's contrib/plugins/cache.c (just before qemu_plugin_install)
 * by count.py: at write(DCAC_MARKER_FD, buf, id) print the running cache counters, summed over the
 * simulated cores, as "marker <id> dacc .. dmiss .. iacc .. imiss .. l2acc .. l2miss ..".
 * iacc counts every executed instruction (one instruction-cache access each).
 * Option arm=<id>: instrument nothing until marker <id>, then flush the translated code
 * (qemu_plugin_reset) and simulate from there on: start-up runs at plain qemu speed, and the caches
 * start cold at that marker. Option write_nr=<n>: the guest's write system call number (64 on aarch64,
 * the default; 1 on x86-64).
 */
#define DCAC_MARKER_FD 252076

static int64_t dcac_write_nr = 64;
static int64_t dcac_arm_id = -1;
static bool dcac_armed;
static qemu_plugin_id_t dcac_plugin_id;
static void dcac_register_all(qemu_plugin_id_t id);

static void dcac_marker(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                        uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                        uint64_t a8)
{
    uint64_t da = 0, dm = 0, ia = 0, im = 0, la = 0, lm = 0;
    int i;

    if (num != dcac_write_nr || a1 != DCAC_MARKER_FD) {
        return;
    }
    for (i = 0; i < cores; i++) {
        g_mutex_lock(&l1_dcache_locks[i]);
        da += l1_dcaches[i]->accesses;
        dm += l1_dcaches[i]->misses;
        g_mutex_unlock(&l1_dcache_locks[i]);
        g_mutex_lock(&l1_icache_locks[i]);
        ia += l1_icaches[i]->accesses;
        im += l1_icaches[i]->misses;
        g_mutex_unlock(&l1_icache_locks[i]);
        if (use_l2) {
            g_mutex_lock(&l2_ucache_locks[i]);
            la += l2_ucaches[i]->accesses;
            lm += l2_ucaches[i]->misses;
            g_mutex_unlock(&l2_ucache_locks[i]);
        }
    }
    g_autofree gchar *out = g_strdup_printf(
        "marker %" PRIu64 " dacc %" PRIu64 " dmiss %" PRIu64 " iacc %" PRIu64 " imiss %" PRIu64
        " l2acc %" PRIu64 " l2miss %" PRIu64 "\n", a3, da, dm, ia, im, la, lm);
    qemu_plugin_outs(out);
    if (!dcac_armed && (int64_t)a3 == dcac_arm_id) {
        dcac_armed = true;
        qemu_plugin_reset(dcac_plugin_id, dcac_register_all);
    }
}

static void dcac_register_all(qemu_plugin_id_t id)
{
    if (dcac_armed) {
        qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    }
    qemu_plugin_register_vcpu_syscall_cb(id, dcac_marker);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
}

