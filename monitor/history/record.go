package history

import (
	"database/sql"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/mlc-lab/mlc/monitor"
)

// Busy says when a container's sample counts as busy: CPU% >= CPUPercent,
// or its own GPU utilisation >= GPUPercent on any of its GPUs, or its
// network traffic in the interval (rx+tx delta) >= NetBytes (NetBytes 0:
// network ignored). Only running containers are busy. A GPU device is busy
// when its utilisation is >= GPUPercent. The thresholds are stored with each
// sample, and the flags computed with them.
type Busy struct {
	CPUPercent float64
	GPUPercent float64
	NetBytes   uint64
}

// Record stores s in one transaction: per container its figures, network
// deltas over the interval and busy flag; per GPU its figures and whether it
// was busy, held, or used by a host or foreign process; the unattributed GPU
// processes; the per-user totals. Then it deletes everything older than
// s.Time-retention (retention <= 0: keeps all).
//
// The interval of a sample is the time since the previous recorded sample,
// capped at MaxGap; the first sample has interval 0. A sample recorded out of
// order (another mlc recorded a later one first) also shortens its
// successor's interval, so intervals never overlap.
//
// Network counters in ContainerStats are cumulative since the container
// started; the last counters per container are kept. The delta is now-last
// when the container has the same StartedAt and neither counter went down;
// otherwise (restart, counter reset, first sight) it is the current counters
// when the container started after the previous sample, else 0.
func (db *DB) Record(s monitor.Sample, busy Busy, retention time.Duration) error {
	err := db.tx(func(tx *sql.Tx) error { return db.record(db.traced(tx), s, busy, retention) })
	return db.classify(err, "recording a sample")
}

func (db *DB) record(tx querier, s monitor.Sample, busy Busy, retention time.Duration) error {
	now := s.Time.UnixMilli()
	maxGap := db.MaxGap
	if maxGap <= 0 {
		maxGap = DefaultMaxGap
	}
	gap := func(from, to int64) int64 { return min(max(to-from, 0), maxGap.Milliseconds()) }

	var prev sql.NullInt64
	if err := tx.QueryRow(`SELECT MAX(time_ms) FROM samples WHERE time_ms <= ?`, now).Scan(&prev); err != nil {
		return err
	}
	var interval int64
	if prev.Valid {
		interval = gap(prev.Int64, now)
	}
	res, err := tx.Exec(`INSERT INTO samples (time_ms, interval_ms, busy_cpu_pct, busy_gpu_pct, busy_net_bytes, gpu_note)
		VALUES (?, ?, ?, ?, ?, ?)`, now, interval, busy.CPUPercent, busy.GPUPercent, i64(busy.NetBytes), s.GPUNote)
	if err != nil {
		return err
	}
	sid, err := res.LastInsertId()
	if err != nil {
		return err
	}
	// A later sample recorded before this one now follows this one.
	if _, err := tx.Exec(`UPDATE samples SET interval_ms = MIN(MAX(time_ms - ?, 0), ?)
		WHERE id = (SELECT id FROM samples WHERE time_ms > ? ORDER BY time_ms, id LIMIT 1)`,
		now, maxGap.Milliseconds(), now); err != nil {
		return err
	}

	devices := map[string]monitor.GPUStats{} // by gpuKey
	for _, g := range s.GPUs {
		devices[gpuKey(g.UUID, g.Index)] = g
	}
	held := map[string]bool{}

	for _, c := range s.Containers {
		running := c.State == "running"
		rx, tx2, cpuAvg, err := netDelta(tx, c, running, now, prev)
		if err != nil {
			return err
		}
		cpu := c.CPUPercent
		if cpuAvg != nil {
			cpu = *cpuAvg
		}
		gs := containerGPUs(c)
		isBusy := running && (cpu >= busy.CPUPercent ||
			(busy.NetBytes > 0 && rx+tx2 >= busy.NetBytes))
		type gpuRow struct {
			g    cgpu
			util *float64
			busy *bool
		}
		rows := make([]gpuRow, 0, len(gs))
		for _, g := range gs {
			held[gpuKey(g.uuid, g.index)] = true
			dev, known := devices[gpuKey(g.uuid, g.index)]
			u, b := ownUtil(c, g, dev, known, busy.GPUPercent)
			if running && b != nil && *b {
				isBusy = true
			}
			rows = append(rows, gpuRow{g, u, b})
		}
		uuids := make([]string, len(gs))
		for i, g := range gs {
			uuids[i] = g.uuid
		}
		var gpuMem sql.NullInt64
		if c.GPUMemoryBytes != nil {
			gpuMem = sql.NullInt64{Int64: i64(*c.GPUMemoryBytes), Valid: true}
		}
		var started sql.NullInt64
		if !c.StartedAt.IsZero() {
			started = sql.NullInt64{Int64: c.StartedAt.UnixMilli(), Valid: true}
		}
		if _, err := tx.Exec(`INSERT INTO containers (sample_id, container_id, name, user, running, cpu_percent,
			memory_bytes, memory_limit_bytes, pids, net_rx_bytes, net_tx_bytes, n_gpus, gpu_uuids,
			gpu_util_percent, gpu_memory_bytes, busy, started_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			sid, c.ID, c.Name, c.User, running, cpu, i64(c.MemoryBytes), i64(c.MemoryLimitBytes),
			i64(c.Pids), i64(rx), i64(tx2), len(gs), strings.Join(uuids, ","), nullFloat(c.GPUUtilPercent),
			gpuMem, isBusy, started); err != nil {
			return err
		}
		var busyMs, runningMs sql.NullInt64
		if isBusy {
			busyMs = sql.NullInt64{Int64: now, Valid: true}
		}
		if running {
			runningMs = sql.NullInt64{Int64: now, Valid: true}
		}
		// Name, user and start time follow the latest sample by time, then
		// sample id (this one has the highest id). since_busy counts the
		// rows later than last_busy_ms: one more for a row later than it
		// that is not busy; for a busy one later than it (or the first busy
		// one), the rows later than this one, which only a sample recorded
		// out of order has (in order, the search finds no sample).
		if _, err := tx.Exec(`INSERT INTO activity (container_id, name, user, first_seen_ms, last_seen_ms,
			last_busy_ms, samples, since_busy, last_running_ms, started_ms)
			VALUES (?1, ?2, ?3, ?4, ?4, ?5, 1, ?6, ?7, ?8) ON CONFLICT (container_id) DO UPDATE SET
			name = CASE WHEN excluded.last_seen_ms >= last_seen_ms THEN excluded.name ELSE name END,
			user = CASE WHEN excluded.last_seen_ms >= last_seen_ms THEN excluded.user ELSE user END,
			started_ms = CASE WHEN excluded.last_seen_ms >= last_seen_ms THEN excluded.started_ms ELSE started_ms END,
			first_seen_ms = MIN(first_seen_ms, excluded.first_seen_ms),
			last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms),
			last_busy_ms = MAX(COALESCE(last_busy_ms, excluded.last_busy_ms), COALESCE(excluded.last_busy_ms, last_busy_ms)),
			samples = samples + 1,
			since_busy = CASE
				WHEN last_busy_ms >= excluded.last_seen_ms THEN since_busy
				WHEN excluded.last_busy_ms IS NULL THEN since_busy + 1
				ELSE (SELECT COUNT(*) FROM samples s CROSS JOIN containers c
					WHERE s.time_ms > ?4 AND c.container_id = ?1 AND c.sample_id = s.id)
				END,
			last_running_ms = MAX(COALESCE(last_running_ms, excluded.last_running_ms), COALESCE(excluded.last_running_ms, last_running_ms))`,
			c.ID, c.Name, c.User, now, busyMs, boolInt(!isBusy), runningMs, started); err != nil {
			return err
		}
		for _, r := range rows {
			var b sql.NullBool
			if r.busy != nil {
				b = sql.NullBool{Bool: *r.busy, Valid: true}
			}
			if _, err := tx.Exec(`INSERT INTO container_gpus (sample_id, container_id, user, running, gpu_index,
				gpu_uuid, util_percent, busy) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				sid, c.ID, c.User, running, r.g.index, r.g.uuid, nullFloat(r.util), b); err != nil {
				return err
			}
		}
	}

	other := map[string]bool{}
	for _, p := range s.Unattributed {
		other[gpuKey(p.GPUUUID, p.GPU)] = true
		if _, err := tx.Exec(`INSERT INTO unattributed (sample_id, gpu_index, gpu_uuid, pid, owner, uid,
			memory_bytes, command) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			sid, p.GPU, p.GPUUUID, p.PID, p.Owner, p.UID, i64(p.MemoryBytes), p.Command); err != nil {
			return err
		}
	}
	for _, g := range s.GPUs {
		var b sql.NullBool
		if g.UtilPercent != nil {
			b = sql.NullBool{Bool: *g.UtilPercent >= busy.GPUPercent, Valid: true}
		}
		k := gpuKey(g.UUID, g.Index)
		if _, err := tx.Exec(`INSERT INTO gpus (sample_id, gpu_index, gpu_uuid, name, util_percent,
			memory_used_bytes, memory_total_bytes, mig, busy, allocated, unattributed)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			sid, g.Index, g.UUID, g.Name, nullFloat(g.UtilPercent), i64(g.MemoryUsedBytes),
			i64(g.MemoryTotalBytes), g.MIG, b, held[k], other[k]); err != nil {
			return err
		}
	}
	for _, u := range s.Users {
		if _, err := tx.Exec(`INSERT INTO users (sample_id, user, containers, running, cpu_percent, memory_bytes,
			gpus, gpu_memory_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			sid, u.User, u.Containers, u.Running, u.CPUPercent, i64(u.MemoryBytes), u.GPUs,
			i64(u.GPUMemoryBytes)); err != nil {
			return err
		}
	}

	if retention > 0 {
		return prune(tx, now-retention.Milliseconds())
	}
	return nil
}

// prune deletes the samples before cutoff (Unix ms), their rows, and the
// network counters of containers not seen since, and brings the activity of
// the containers that had rows among them up to date: their count less
// those rows, their first sample the first one left, their last busy sample
// and last running sample gone where they were before cutoff (every row left
// is from cutoff on), its rows since the last busy one all those left where
// that one is gone, and no activity where no sample is left. The start time
// is of the latest row, which stays.
func prune(tx querier, cutoff int64) error {
	// One statement for every container with rows to go. The doomed rows
	// are counted grouped by an expression, so SQLite does not walk every
	// row in container order to skip sorting the few it counts. The first
	// row left is found from the container's own rows where few are left,
	// else by walking the samples from the cutoff (it is usually in the
	// first one).
	rows, err := tx.Query(`UPDATE activity AS a SET
			samples = a.samples - d.n,
			first_seen_ms = CASE
				WHEN a.samples - d.n <= 0 THEN a.first_seen_ms
				WHEN a.samples - d.n <= ?2 THEN COALESCE((SELECT MIN(s.time_ms)
					FROM containers c JOIN samples s ON s.id = c.sample_id
					WHERE c.container_id = a.container_id AND s.time_ms >= ?1), a.first_seen_ms)
				ELSE COALESCE((SELECT s.time_ms FROM samples s WHERE s.time_ms BETWEEN ?1 AND a.last_seen_ms
					AND EXISTS (SELECT 1 FROM containers c WHERE c.container_id = a.container_id AND c.sample_id = s.id)
					ORDER BY s.time_ms LIMIT 1), a.first_seen_ms)
				END,
			last_busy_ms = CASE WHEN a.last_busy_ms < ?1 THEN NULL ELSE a.last_busy_ms END,
			since_busy = CASE WHEN a.last_busy_ms >= ?1 THEN a.since_busy ELSE a.samples - d.n END,
			last_running_ms = CASE WHEN a.last_running_ms < ?1 THEN NULL ELSE a.last_running_ms END
		FROM (SELECT container_id, COUNT(*) AS n FROM containers
			WHERE sample_id IN (SELECT id FROM samples WHERE time_ms < ?1) GROUP BY +container_id) AS d
		WHERE a.container_id = d.container_id
		RETURNING container_id, samples, first_seen_ms`, cutoff, fewRows)
	if err != nil {
		return err
	}
	var gone, recount []string
	for rows.Next() {
		var id string
		var n, first int64
		if err := rows.Scan(&id, &n, &first); err != nil {
			rows.Close()
			return err
		}
		switch {
		case n <= 0:
			gone = append(gone, id)
		case first < cutoff:
			// No row left was found: the table did not match the rows.
			recount = append(recount, id)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}

	for _, t := range []string{"containers", "container_gpus", "gpus", "unattributed", "users"} {
		if _, err := tx.Exec(`DELETE FROM `+t+` WHERE sample_id IN (SELECT id FROM samples WHERE time_ms < ?)`, cutoff); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(`DELETE FROM samples WHERE time_ms < ?`, cutoff); err != nil {
		return err
	}
	if _, err := tx.Exec(`DELETE FROM net_counters WHERE seen_ms < ?`, cutoff); err != nil {
		return err
	}
	for _, id := range gone {
		if _, err := tx.Exec(`DELETE FROM activity WHERE container_id = ?`, id); err != nil {
			return err
		}
	}
	for _, id := range recount {
		if err := recountActivity(tx, id); err != nil {
			return err
		}
	}
	return nil
}

// fewRows is the number of rows left of a container up to which prune finds
// its first one from its own rows. A variable for tests.
var fewRows int64 = 1000

// recountActivity sets the activity of container id from its rows.
func recountActivity(tx querier, id string) error {
	if _, err := tx.Exec(`DELETE FROM activity WHERE container_id = ?`, id); err != nil {
		return err
	}
	_, err := tx.Exec(activityFromRows(`WHERE c.container_id = ?`), id)
	return err
}

// netDelta works out a container's network traffic since the previous sample
// and keeps its counters for the next (see Record). Stopped containers have
// no traffic and leave their counters as they were.
// netDelta is the container's network traffic since its previous sample,
// and its CPU % averaged over that whole interval (nil when there is no
// previous sample of the same run: the sample's own window figure is used).
// The counters are cumulative since the container started; a restart (a
// new start time) begins them again.
func netDelta(tx querier, c monitor.ContainerStats, running bool, now int64, prev sql.NullInt64) (rx, txb uint64, cpu *float64, err error) {
	if !running || c.ID == "" {
		return 0, 0, nil, nil
	}
	started := c.StartedAt.UnixMilli()
	if c.StartedAt.IsZero() {
		started = 0
	}
	var last struct {
		started, rx, tx, seen int64
		cpu                   sql.NullInt64
	}
	err = tx.QueryRow(`SELECT started_ms, rx_bytes, tx_bytes, seen_ms, cpu_ns FROM net_counters WHERE container_id = ?`, c.ID).
		Scan(&last.started, &last.rx, &last.tx, &last.seen, &last.cpu)
	found := err == nil
	if err != nil && err != sql.ErrNoRows {
		return 0, 0, nil, err
	}
	if found && last.seen > now {
		// Another mlc recorded a later sample first: its counters stay.
		return 0, 0, nil, nil
	}
	curRx, curTx, curCPU := i64(c.NetRxBytes), i64(c.NetTxBytes), i64(c.CPUTotalNanos)
	switch {
	case found && last.started == started && curRx >= last.rx && curTx >= last.tx:
		rx, txb = uint64(curRx-last.rx), uint64(curTx-last.tx)
	case prev.Valid && started > prev.Int64:
		rx, txb = uint64(curRx), uint64(curTx)
	}
	if found && last.started == started && last.cpu.Valid && curCPU > 0 && curCPU >= last.cpu.Int64 && now > last.seen {
		p := float64(curCPU-last.cpu.Int64) / float64((now-last.seen)*1e6) * 100
		cpu = &p
	}
	var cpuCol sql.NullInt64
	if curCPU > 0 {
		cpuCol = sql.NullInt64{Int64: curCPU, Valid: true}
	}
	_, err = tx.Exec(`INSERT INTO net_counters (container_id, started_ms, rx_bytes, tx_bytes, seen_ms, cpu_ns)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (container_id) DO UPDATE SET
		started_ms = excluded.started_ms, rx_bytes = excluded.rx_bytes, tx_bytes = excluded.tx_bytes,
		seen_ms = excluded.seen_ms, cpu_ns = excluded.cpu_ns`, c.ID, started, curRx, curTx, now, cpuCol)
	return rx, txb, cpu, err
}

// cgpu is one GPU a container holds.
type cgpu struct {
	index int // -1 where only the UUID is known
	uuid  string
}

// containerGPUs pairs a container's GPU indices and UUIDs.
func containerGPUs(c monitor.ContainerStats) []cgpu {
	n := max(len(c.GPUs), len(c.GPUUUIDs))
	out := make([]cgpu, n)
	for i := range out {
		out[i].index = -1
		if i < len(c.GPUs) {
			out[i].index = c.GPUs[i]
		}
		if i < len(c.GPUUUIDs) {
			out[i].uuid = c.GPUUUIDs[i]
		}
	}
	return out
}

// gpuKey names a GPU by UUID, or by index where the UUID is missing.
func gpuKey(uuid string, index int) string {
	if uuid != "" {
		return uuid
	}
	return "#" + strconv.Itoa(index)
}

// ownUtil is the utilisation of the container's own processes on GPU g, and
// whether that makes the GPU busy; nil where unknown:
//   - the sum of its processes' figures on g, where any has one;
//   - 0 where it has no process on g and NVML measured the device;
//   - else unknown, but not busy where the device's own utilisation (which
//     bounds the container's) is below the threshold.
func ownUtil(c monitor.ContainerStats, g cgpu, dev monitor.GPUStats, devKnown bool, thr float64) (*float64, *bool) {
	var sum float64
	procs, figures := 0, 0
	for _, p := range c.GPUProcesses {
		if !sameGPU(p, g) {
			continue
		}
		procs++
		if p.UtilPercent != nil {
			sum += *p.UtilPercent
			figures++
		}
	}
	devUtil := (*float64)(nil)
	if devKnown {
		devUtil = dev.UtilPercent
	}
	var u *float64
	switch {
	case figures > 0:
		u = &sum
	case procs == 0 && devUtil != nil:
		u = new(float64)
	case procs == 0 && len(c.GPUProcesses) == 0 && c.GPUUtilPercent != nil && len(containerGPUs(c)) == 1:
		// No process list, but a figure for its one GPU.
		v := *c.GPUUtilPercent
		u = &v
	}
	if u != nil {
		b := *u >= thr
		return u, &b
	}
	if devUtil != nil && *devUtil < thr {
		b := false
		return nil, &b
	}
	return nil, nil
}

func sameGPU(p monitor.GPUProcess, g cgpu) bool {
	if p.GPUUUID != "" && g.uuid != "" {
		return p.GPUUUID == g.uuid
	}
	return g.index >= 0 && p.GPU == g.index
}

func nullFloat(p *float64) sql.NullFloat64 {
	if p == nil {
		return sql.NullFloat64{}
	}
	return sql.NullFloat64{Float64: *p, Valid: true}
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}

// i64 stores a uint64 in SQLite's signed integers, saturating.
func i64(u uint64) int64 {
	if u > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(u)
}
