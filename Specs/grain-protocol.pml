/*
 * grain-protocol.pml -- a Promela model of Snapback's grain protocol (BRIEF.md sections 1-3):
 * copy-on-write, background copy, rollback, host writes during a rollback
 * (restore-before-write), and a crash at any point followed by restart/recovery.
 *
 * WHAT IS MODELLED (one map, source -> target, autorestore on)
 *   - Each grain of the source and of the target has a *current* value (what reads see) and a
 *     *durable* value (what survives a crash), plus a flag "has an unsynced write". A write
 *     changes the current value only; sync() makes every grain of that volume durable. A crash
 *     keeps or loses each unsynced grain write nondeterministically (a grain is the unit, so a
 *     torn grain is modelled as lost-or-kept per grain). When an unsynced grain is overwritten
 *     before a sync, the older value may have been written back already (nondeterministic), so
 *     after a crash a grain may hold any value written to it since its last sync.
 *   - Durable bitmaps split / dirty / restored and the durable volume status
 *     (ONLINE / RESTORING). Every commit (LMDB transaction: events + bitmap chunks) is one atomic
 *     step. In-memory bitmaps always equal the durable ones between operations (commitBitmaps
 *     installs them only after the commit), so only the durable copy is kept; an operation's
 *     pending changes live in its local variables and are lost by a crash.
 *   - The snapshot: at the start (mapStarted clears the bitmaps atomically with the event) every
 *     source grain durably holds IMG, so the point-in-time image is IMG for every grain.
 *   - Host writes (Controller+HostIO.swift write()): one grain each, FUA or not, value = the
 *     write's sequence number (1..MAXW, a version). During a rollback: restore-before-write
 *     (for a grain not yet restored: if it is dirty, copy target->source and sync the source;
 *     then durably mark restored=1 dirty=0 -- see AS_IMPLEMENTED below); then copy-on-write
 *     (copy source->target, sync target, durably mark split+dirty -- or only dirty for a split
 *     grain); then write the source; FUA syncs the source; then the host is acknowledged.
 *   - Two host writes made as one batch (Controller+WriteBatch.swift, online source only): every
 *     unsplit grain of both copied source->target once, one target sync, one commit marking
 *     split+dirty for both, the two source writes in order, one source sync if either is FUA,
 *     then both acknowledged.
 *   - Background copy (copyStepLocked): any batch of unsplit grains: copy source->target, sync
 *     target, durably mark split. It may run at any time the source is not faulted, including
 *     during a rollback, or never (copyrate 0).
 *   - A fault: the fault event and the automatic rollback decision are one commit (reportFault
 *     returns both events); the source becomes RESTORING. Up to MAXFAULT faults, so a completed
 *     rollback can be followed by a second one on the same snapshot.
 *   - Rollback steps (rollbackStepLocked): any non-empty batch of the grains dirty & !restored:
 *     copy target->source, sync source, then one commit marking restored=1 dirty=0 for the
 *     batch; when no grain is left dirty & !restored, the same commit completes the rollback
 *     (restored cleared, source ONLINE). With no grain left at all, a commit that only
 *     completes.
 *   - A crash at ANY point between two I/O operations or commits (CRASHPOINT), and also while
 *     idle: unsynced writes are kept or lost per grain, all in-flight operation state is lost,
 *     the host gets no acknowledgement for an in-flight write, and the restarted controller
 *     resumes from the durable status and bitmaps (a RESTORING source keeps rolling back).
 *     Crashes are unbounded (a crash that changes nothing just revisits a state).
 *
 * WHAT IS ABSTRACTED AWAY
 *   - Bytes, offsets, sectors (a grain is one small integer; no sub-grain tearing), multi-grain
 *     host writes (a write touching several grains does the same steps for each, with one
 *     commit per phase), copies in runs of adjacent grains (each grain of a run is kept or lost
 *     on its own, which the per-grain crash covers), grain sizes, budgets/pacing (a step's batch is ANY non-empty subset,
 *     a superset of the implementation's in-order prefix), progress counters and events that
 *     change no bitmap, the LMDB log itself (a commit is atomic and durable), I/O errors,
 *     several maps on one source, stop/prepare/restart of a map, host writes to the target
 *     (read-only while autorestore is on), the operator's manual rollback (same steps).
 *   - Host reads are checked, not modelled as actions: a read of grain g on a RESTORING source
 *     returns the target if g is dirty & !restored, else the source (read() in HostIO).
 *
 * ASSERTIONS (on durable state whenever a crash happens, on all state between operations, plus
 * where noted)
 *   (a) no lost acknowledged write: a rollback copy (step or restore-before-write) never writes a
 *       source grain that got an acknowledged host write during the current rollback (checked
 *       at the copy); and the source, durable and current, only ever holds the image or values
 *       that hosts wrote (ok[g]: reset to {IMG} when a rollback starts, a write adds its value
 *       when it is issued, a FUA acknowledgement makes it exactly {value}).
 *   (b) when the rollback completes, every source grain (current and durable) is in ok[g]: the
 *       image, except grains written during the rollback, which hold the last acknowledged
 *       FUA write (or a value written after it).
 *   (c) the point-in-time image never changes: a split grain's target is IMG (current and
 *       durable), an unsplit grain's source is IMG (current and durable). The rollback has no
 *       statement that writes the target at all.
 *   (d) dirty => split, durably, at all times; restored only while RESTORING.
 *   (e) read-your-writes: at the acknowledgement the host's read of the grain returns the value
 *       just written; at all times a host read returns a value in ok[g].
 *
 * VARIANT SWITCHES (pass to spin: spin -DNAME -a grain-protocol.pml)
 *   BROKEN_ORDER    copy-on-write commits split+dirty AFTER the source write (and its FUA
 *                   sync): must violate (c)/(b).
 *   BROKEN_RESTORE  a rollback step commits restored=1 dirty=0 (and the completion) BEFORE
 *                   syncing its copies: must violate (b).
 *   AS_IMPLEMENTED  restore-before-write as Controller+HostIO.swift did it before this model found
 *                   the bug (now fixed; check-spec requires this variant to fail): it
 *                   only handles grains that are dirty & !restored. A write during a rollback to
 *                   a grain that was clean when the rollback started is then marked dirty by
 *                   copy-on-write without being marked restored, so reads serve the old image
 *                   and the next rollback step copies the image over the acknowledged write.
 *                   Violates (e) and (a). The default model instead marks every not-yet-restored
 *                   grain a write touches as restored (copying only those that are dirty), which
 *                   is what the implementation does now.
 *   NO_READ_CHECK   leaves out (e), so that AS_IMPLEMENTED runs on to the lost write, (a).
 *   BROKEN_BATCH    a batch of two writes commits split+dirty AFTER the source writes (and
 *                   their sync): must violate (c).
 *   PRESTART_WRITE  the host wrote a grain without FUA before the map started and nothing synced
 *                   it (as when startMap did not flush the source; it now does): a crash changes the image of
 *                   an unsplit grain, violating (c). The default assumes a durable source at
 *                   start.
 *
 * CONFIGURATION: NG = 3 grains, MAXW = 3 host writes in total (each FUA or not, to any grain, at
 *   any time the source is online or restoring), MAXFAULT = 2 faults (two rollbacks of one
 *   snapshot), background copy of any batch at any time, unbounded crashes. Exhaustive search:
 *   about 7.3 million states, depth about 440, a few seconds and about 340 MB with -DCOLLAPSE
 *   (lossless state compression; about 550 MB without it).
 *   Override with e.g. spin -DNG=2 -DMAXW=2 -a grain-protocol.pml (about 0.1 million states).
 *
 * HOW TO RUN: tools/check-spec (checks the default model exhaustively, requires the broken
 *   variants to fail). By hand:
 *     spin -a grain-protocol.pml && gcc -DSAFETY -DCOLLAPSE -O2 -w -o pan pan.c && ./pan -m100000
 *     spin -t -p grain-protocol.pml           # replay a counterexample trail (same -D flags)
 *   (in a scratch directory holding a copy of the model: spin and pan write pan.* and the
 *   .trail next to it).
 */

#ifndef NG
#define NG 3
#endif
#ifndef MAXW
#define MAXW 3
#endif
#ifndef MAXFAULT
#define MAXFAULT 2
#endif
#if NG < 1 || NG > 8 || MAXW > 5
#error "NG must be 1..8 (grain bitmasks are bytes) and MAXW at most 5 (values 1..5; 6 and 7 are taken)"
#endif

#define IMG   0          /* every grain's point-in-time image */
#define OLD   6          /* PRESTART_WRITE: the durable value before the unsynced pre-start write */
#define GARB  7          /* the target's contents before it holds a grain */
#define BIT(v) (1 << (v))

mtype = { ONLINE, RESTORING };

/* Volumes: current (what reads see), durable (what survives a crash), unsynced write pending. */
byte vsrc[NG]; byte dsrc[NG]; bool psrc[NG];
byte vtgt[NG]; byte dtgt[NG]; bool ptgt[NG];

/* Durable metadata: bitmaps and the source's status, changed only by atomic commits. */
bool split[NG]; bool dirty[NG]; bool restored[NG];
mtype status = ONLINE;

/* Bounds and ghost state (not lost by a crash; used only by the assertions). */
byte writes;             /* host writes issued so far; the next write's value is writes+1 */
byte faults;
byte ok[NG];             /* bitmask of values the source grain may legitimately hold */
bool acked[NG];          /* a host write to the grain was acknowledged during this rollback */

/* What a host read of source grain g returns (Controller.read on a restoring source). */
#define VIEW(g) ((status == RESTORING && dirty[g] && !restored[g]) -> vtgt[g] : vsrc[g])

/* An assertion that says which property it checks when a trail is replayed. */
#define REQUIRE(cond, what) if :: !(cond) -> printf(what, ci); assert(cond) :: else -> skip fi

/* What survives a crash must be right at every crash point (checked when a crash happens,
   before it discards the unsynced writes): (d), (c), (a) on durable state. */
inline check_durable() {
    d_step {
        ci = 0;
        do
        :: ci < NG ->
            REQUIRE(!dirty[ci] || split[ci], "VIOLATION (d) dirty but not split: grain %d\n");
            REQUIRE(status == RESTORING || !restored[ci], "VIOLATION (d) restored outside a rollback: grain %d\n");
            if
            :: split[ci] -> REQUIRE(dtgt[ci] == IMG, "VIOLATION (c) durable target of a split grain is not the image: grain %d\n")
            :: else -> REQUIRE(dsrc[ci] == IMG, "VIOLATION (c) durable source of an unsplit grain is not the image: grain %d\n")
            fi;
            /* the source holds only the image or what hosts wrote (dirty & !restored grains are
               still to be rolled back) */
            if
            :: status == RESTORING && dirty[ci] && !restored[ci] -> skip
            :: status == RESTORING && restored[ci] ->
                REQUIRE((ok[ci] & BIT(dsrc[ci])) != 0, "VIOLATION (b) grain marked restored, durable source neither the image nor a later host write: grain %d\n")
            :: else -> REQUIRE((ok[ci] & BIT(dsrc[ci])) != 0, "VIOLATION (a) durable source lost or overwrote host data: grain %d\n")
            fi;
            ci++
        :: else -> ci = 0; break
        od
    }
}

/* Between operations (what hosts can observe; the controller's lock hides the steps of one
   operation) the current state must be right too. */
inline check() {
    check_durable();
    d_step {
        ci = 0;
        do
        :: ci < NG ->
            if
            :: split[ci] -> REQUIRE(vtgt[ci] == IMG, "VIOLATION (c) target of a split grain is not the image: grain %d\n")
            :: else -> REQUIRE(vsrc[ci] == IMG, "VIOLATION (c) source of an unsplit grain is not the image: grain %d\n")
            fi;
            if
            :: status == RESTORING && dirty[ci] && !restored[ci] -> skip
            :: else -> REQUIRE((ok[ci] & BIT(vsrc[ci])) != 0, "VIOLATION (a) source lost or overwrote host data: grain %d\n")
            fi;
#ifndef NO_READ_CHECK
            REQUIRE((ok[ci] & BIT(VIEW(ci))) != 0, "VIOLATION (e) a host read returns data no host wrote: grain %d\n");
#endif
            ci++
        :: else -> ci = 0; break
        od
    }
}

#define CRASHPOINT  if :: goto crash :: skip fi

/* A write of v to grain g of a volume: current only; an earlier unsynced value of the grain
   may already have reached the disk. */
inline write_src(g, v) {
    if :: psrc[g] -> dsrc[g] = vsrc[g] :: skip fi;
    vsrc[g] = v; psrc[g] = true
}
inline write_tgt(g, v) {
    if :: ptgt[g] -> dtgt[g] = vtgt[g] :: skip fi;
    vtgt[g] = v; ptgt[g] = true
}
inline sync_src() {
    d_step { ci = 0; do :: ci < NG -> dsrc[ci] = vsrc[ci]; psrc[ci] = false; ci++ :: else -> ci = 0; break od }
}
inline sync_tgt() {
    d_step { ci = 0; do :: ci < NG -> dtgt[ci] = vtgt[ci]; ptgt[ci] = false; ci++ :: else -> ci = 0; break od }
}

/* A rollback copy of grain g (target -> source): never over an acknowledged write (a). */
inline restore_copy(g) {
    if
    :: acked[g] -> printf("VIOLATION (a): rollback copy over the acknowledged write to grain %d\n", g)
    :: else -> skip
    fi;
    assert(!acked[g]);
    printf("     restore copy: source grain %d := target %d\n", g, vtgt[g]);
    write_src(g, vtgt[g])
}

active proctype snapback()
{
    byte g;              /* the grain of the current operation */
    byte v;              /* the value of the current host write */
    bool fua;
    byte g2;             /* a batch's second write: grain, value, FUA */
    byte v2;
    bool fua2;
    byte batch;          /* bitmask of grains in the current step */
    bool mark;           /* copy-on-write: a bitmap commit is owed */
    byte ci;             /* loop index of the check/sync helpers */
    byte pending_copy;   /* bitmask of unsplit grains (background copy work) */
    byte pending_restore;/* bitmask of grains dirty & !restored (rollback work) */

    /* Map started: bitmaps clear, source durably holds the image, target holds garbage. */
    d_step {
        ci = 0;
        do
        :: ci < NG -> vsrc[ci] = IMG; dsrc[ci] = IMG; vtgt[ci] = GARB; dtgt[ci] = GARB; ok[ci] = BIT(IMG); ci++
        :: else -> ci = 0; break
        od
    }
#ifdef PRESTART_WRITE
    /* The host wrote IMG over OLD without FUA just before the start; nothing synced it. */
    d_step { dsrc[0] = OLD; psrc[0] = true }
#endif

idle:
    skip;
    d_step {
        g = 0; v = 0; fua = false; batch = 0; mark = false; g2 = 0; v2 = 0; fua2 = false;
        pending_copy = 0; pending_restore = 0;
        ci = 0;
        do
        :: ci < NG ->
            if :: !split[ci] -> pending_copy = pending_copy | BIT(ci) :: else -> skip fi;
            if :: dirty[ci] && !restored[ci] -> pending_restore = pending_restore | BIT(ci) :: else -> skip fi;
            ci++
        :: else -> ci = 0; break
        od
    }
    check();
    do
    /* ---- a crash while idle: unsynced (non-FUA) writes may be lost ---- */
    :: goto crash

    /* ---- a host write (Controller+HostIO.swift write()) ---- */
    :: writes < MAXW ->
        writes++;
        v = writes;
        select(g : 0 .. NG - 1);
        if :: fua = true :: fua = false fi;
        printf("STEP host write #%d: grain %d := %d, fua=%d (source %e)\n", v, g, v, fua, status);

        /* restore-before-write on a restoring source (restoreBeforeWriteLocked) */
        if
        :: status == RESTORING ->
#ifdef AS_IMPLEMENTED
            if
            :: dirty[g] && !restored[g] ->
                restore_copy(g); CRASHPOINT;
                sync_src(); CRASHPOINT;
                d_step { restored[g] = true; dirty[g] = false; printf("     commit restored, clean: grain %d\n", g) }
                CRASHPOINT
            :: else -> skip
            fi
#else
            if
            :: !restored[g] ->
                if
                :: dirty[g] -> restore_copy(g); CRASHPOINT; sync_src(); CRASHPOINT
                :: else -> skip      /* the grain already equals the image: nothing to copy */
                fi;
                d_step { restored[g] = true; dirty[g] = false; printf("     commit restored, clean: grain %d\n", g) }
                CRASHPOINT
            :: else -> skip
            fi
#endif
        :: else -> skip
        fi;

        /* copy-on-write (copyOnWriteLocked) */
        mark = false;
        if
        :: !split[g] ->
            printf("     copy-on-write: target grain %d := source %d\n", g, vsrc[g]);
            write_tgt(g, vsrc[g]); CRASHPOINT;
            sync_tgt(); CRASHPOINT;
            mark = true
        :: else -> skip
        fi;
        if :: !dirty[g] -> mark = true :: else -> skip fi;
#ifndef BROKEN_ORDER
        if
        :: mark -> d_step { split[g] = true; dirty[g] = true; printf("     commit split, dirty: grain %d\n", g) }
            CRASHPOINT
        :: else -> skip
        fi;
#endif

        /* the source write, FUA, acknowledgement */
        ok[g] = ok[g] | BIT(v);          /* from now on the write may land */
        printf("     source write: grain %d := %d\n", g, v);
        write_src(g, v); CRASHPOINT;
        if :: fua -> sync_src(); CRASHPOINT :: else -> skip fi;
#ifdef BROKEN_ORDER
        if
        :: mark -> d_step { split[g] = true; dirty[g] = true; printf("     commit split, dirty (too late): grain %d\n", g) }
            CRASHPOINT
        :: else -> skip
        fi;
#endif
        /* acknowledged: the host reads back what it wrote (e) */
        if
#ifndef NO_READ_CHECK
        :: VIEW(g) != v -> printf("VIOLATION (e): grain %d reads %d right after the acknowledged write of %d\n", g, VIEW(g), v);
            assert(VIEW(g) == v)
#endif
        :: else -> skip
        fi;
        printf("STEP host write #%d acknowledged\n", v);
        d_step {
            if :: fua -> ok[g] = BIT(v) :: else -> skip fi;
            if :: status == RESTORING -> acked[g] = true :: else -> skip fi
        }
        goto idle

    /* ---- two host writes made as one batch (Controller+WriteBatch.swift): on an online
       source only (a restoring source's writes are made one at a time) ---- */
    :: status == ONLINE && writes + 2 <= MAXW ->
        writes++; v = writes; select(g : 0 .. NG - 1);
        writes++; v2 = writes; select(g2 : 0 .. NG - 1);
        if :: fua = true :: fua = false fi;
        if :: fua2 = true :: fua2 = false fi;
        printf("STEP batch: grain %d := %d (fua=%d), grain %d := %d (fua=%d)\n", g, v, fua, g2, v2, fua2);
        /* 1. every unsplit grain copied once, from the source as it was before the batch */
        batch = 0;
        if :: !split[g] -> write_tgt(g, vsrc[g]); batch = batch | BIT(g); CRASHPOINT :: else -> skip fi;
        if :: !split[g2] && (batch & BIT(g2)) == 0 -> write_tgt(g2, vsrc[g2]); batch = batch | BIT(g2); CRASHPOINT :: else -> skip fi;
        /* 2. one target sync */
        if :: batch != 0 -> sync_tgt(); CRASHPOINT :: else -> skip fi;
#ifndef BROKEN_BATCH
        /* 3. one commit of every mark */
        if
        :: batch != 0 || !dirty[g] || !dirty[g2] ->
            d_step { split[g] = true; dirty[g] = true; split[g2] = true; dirty[g2] = true; printf("     commit split, dirty: grains %d, %d\n", g, g2) }
            CRASHPOINT
        :: else -> skip
        fi;
#endif
        /* 4. the source writes, in order */
        ok[g] = ok[g] | BIT(v);
        write_src(g, v); CRASHPOINT;
        ok[g2] = ok[g2] | BIT(v2);
        write_src(g2, v2); CRASHPOINT;
        /* 5. one source sync for the FUA writes */
        if :: fua || fua2 -> sync_src(); CRASHPOINT :: else -> skip fi;
#ifdef BROKEN_BATCH
        if
        :: batch != 0 || !dirty[g] || !dirty[g2] ->
            d_step { split[g] = true; dirty[g] = true; split[g2] = true; dirty[g2] = true; printf("     commit split, dirty (too late): grains %d, %d\n", g, g2) }
            CRASHPOINT
        :: else -> skip
        fi;
#endif
        /* both acknowledged: read-your-writes, the later write winning on a shared grain */
        if
#ifndef NO_READ_CHECK
        :: VIEW(g2) != v2 || (g != g2 && VIEW(g) != v) ->
            printf("VIOLATION (e): a batch's write does not read back\n");
            assert(false)
#endif
        :: else -> skip
        fi;
        printf("STEP batch acknowledged\n");
        d_step {
            if :: fua && g != g2 -> ok[g] = BIT(v) :: fua && g == g2 -> ok[g] = BIT(v) | BIT(v2) :: else -> skip fi;
            if :: fua2 -> ok[g2] = BIT(v2) :: else -> skip fi
        }
        goto idle

    /* ---- a background copy step (copyStepLocked), when some grain is unsplit ---- */
    :: pending_copy != 0 ->
        batch = 0;
        g = 0;
        do
        :: g < NG ->
            if
            :: !split[g] -> write_tgt(g, vsrc[g]); batch = batch | BIT(g); CRASHPOINT
            :: !split[g] -> skip
            :: split[g] -> skip
            fi;
            g++
        :: else -> break
        od;
        if
        :: batch != 0 ->
            sync_tgt(); CRASHPOINT;
            printf("STEP background copy: target synced, commit split for grains mask %d\n", batch);
            d_step {                                                    /* commit */
                g = 0;
                do
                :: g < NG -> if :: (batch & BIT(g)) != 0 -> split[g] = true :: else -> skip fi; g++
                :: else -> break
                od
            }
        :: else -> skip
        fi;
        goto idle

    /* ---- a fault: fault event + automatic rollback decision, one commit ---- */
    :: status == ONLINE && faults < MAXFAULT ->
        printf("STEP fault: rollback starts (fault + automatic rollback, one commit)\n");
        d_step {
            faults++;
            status = RESTORING;
            /* ghost: from now on every grain must end as the image unless written */
            ci = 0;
            do
            :: ci < NG -> ok[ci] = BIT(IMG); acked[ci] = false; ci++
            :: else -> ci = 0; break
            od
        }
        goto idle

    /* ---- a rollback step (rollbackStepLocked) ---- */
    :: status == RESTORING ->
        printf("STEP rollback step\n");
        batch = 0;
        g = 0;
        do
        :: g < NG ->
            if
            :: dirty[g] && !restored[g] -> restore_copy(g); batch = batch | BIT(g); CRASHPOINT
            :: dirty[g] && !restored[g] -> skip
            :: else -> skip
            fi;
            g++
        :: else -> break
        od;
        if
        :: batch == 0 && pending_restore != 0 -> goto idle     /* an empty batch: nothing done */
        :: else -> skip
        fi;
#ifndef BROKEN_RESTORE
        if :: batch != 0 -> sync_src(); CRASHPOINT :: else -> skip fi;
#endif
        /* One commit: the batch's marks restored=1 dirty=0, and, when no grain is left dirty &
           !restored, the completion (restored cleared, source ONLINE) -- "the last batch's marks
           and the completion share one commit". */
        d_step {
            g = 0;
            do
            :: g < NG -> if :: (batch & BIT(g)) != 0 -> restored[g] = true; dirty[g] = false :: else -> skip fi; g++
            :: else -> break
            od;
            pending_restore = 0;
            g = 0;
            do
            :: g < NG -> if :: dirty[g] && !restored[g] -> pending_restore = pending_restore | BIT(g) :: else -> skip fi; g++
            :: else -> g = 0; break
            od
        }
        if
        :: pending_restore == 0 ->
            /* (b) the rollback completes: every grain is the image or what hosts wrote during it */
            g = 0;
            do
            :: g < NG ->
                if
                :: (ok[g] & BIT(vsrc[g])) == 0 || (ok[g] & BIT(dsrc[g])) == 0 ->
                    printf("VIOLATION (b): grain %d holds %d (durable %d) at completion\n", g, vsrc[g], dsrc[g]);
                    assert((ok[g] & BIT(vsrc[g])) != 0 && (ok[g] & BIT(dsrc[g])) != 0)
                :: else -> skip
                fi;
                g++
            :: else -> break
            od;
            printf("STEP rollback: commit restored for grains mask %d with the completion\n", batch);
            d_step {
                status = ONLINE;
                ci = 0;
                do :: ci < NG -> restored[ci] = false; ci++ :: else -> ci = 0; break od
            }
        :: else ->
            printf("STEP rollback: commit restored for grains mask %d\n", batch)
        fi;
#ifdef BROKEN_RESTORE
        /* the sync comes after the commit */
        CRASHPOINT;
        if :: batch != 0 -> sync_src() :: else -> skip fi;
#endif
        goto idle
    od;

crash:
    /* Every unsynced grain write is kept or lost; volatile state and in-flight work vanish. */
    printf("STEP CRASH\n");
    check_durable();
    atomic {
        ci = 0;
        do
        :: ci < NG ->
            if :: psrc[ci] -> dsrc[ci] = vsrc[ci]; printf("     source grain %d: unsynced %d kept\n", ci, vsrc[ci])
               :: psrc[ci] -> printf("     source grain %d: unsynced %d lost, durable %d\n", ci, vsrc[ci], dsrc[ci])
               :: else -> skip
            fi;
            if :: ptgt[ci] -> dtgt[ci] = vtgt[ci]; printf("     target grain %d: unsynced %d kept\n", ci, vtgt[ci])
               :: ptgt[ci] -> printf("     target grain %d: unsynced %d lost, durable %d\n", ci, vtgt[ci], dtgt[ci])
               :: else -> skip
            fi;
            vsrc[ci] = dsrc[ci]; psrc[ci] = false;
            vtgt[ci] = dtgt[ci]; ptgt[ci] = false;
            ci++
        :: else -> ci = 0; break
        od
    }
    /* Restart: the controller reloads status and bitmaps from the durable store and resumes. */
    goto idle
}
