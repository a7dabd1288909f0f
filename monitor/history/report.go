package history

import (
	"database/sql"
	"time"
)

// Activity is what the history knows of one container, for idle cleanup.
// "Latest" is by sample time, then the order samples were recorded in.
//
// The cleanup's idle rule: a running container's idle time is the time
// since LastBusy (or since Started, when it was never busy), judged only once
// SinceBusy reaches min_samples. SinceBusy counts across restarts: where
// the container restarted after its last busy sample (Started after
// LastBusy), the samples before the restart are counted too, and the
// planner, comparing LastBusy with Started, decides what they are worth.
type Activity struct {
	Name      string    // its mlc name in the latest sample
	User      string    // its user in the latest sample
	FirstSeen time.Time // its first sample still kept
	LastSeen  time.Time // its latest sample
	LastBusy  time.Time // its latest busy sample; zero: never busy
	Samples   int       // samples of it kept
	// SinceBusy is the samples of it taken after its last busy one (later
	// in time; all its samples when it was never busy), restarts or not.
	SinceBusy int
	// LastRunning is its latest sample in which it was running (zero:
	// never).
	LastRunning time.Time
	// Started is its StartedAt in its latest sample; zero where unknown
	// (not given, or a sample recorded before schema version 3 and not
	// where its network counters were last kept).
	Started time.Time
}

// Activity returns per container id what the history knows of it (within
// the retention kept), from one row per container.
func (db *DB) Activity() (map[string]Activity, error) {
	out := map[string]Activity{}
	err := db.read(func(q querier) error {
		rows, err := q.Query(`SELECT container_id, name, user, first_seen_ms, last_seen_ms, last_busy_ms, samples,
			since_busy, last_running_ms, started_ms FROM activity`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var a Activity
			var first, last int64
			var busy, run, started sql.NullInt64
			if err := rows.Scan(&id, &a.Name, &a.User, &first, &last, &busy, &a.Samples,
				&a.SinceBusy, &run, &started); err != nil {
				return err
			}
			a.FirstSeen, a.LastSeen = time.UnixMilli(first), time.UnixMilli(last)
			a.LastBusy, a.LastRunning, a.Started = msTime(busy), msTime(run), msTime(started)
			out[id] = a
		}
		return rows.Err()
	})
	if err != nil {
		return nil, db.classify(err, "reading activity")
	}
	return out, nil
}

// msTime is a time stored as Unix ms; zero where NULL.
func msTime(ms sql.NullInt64) time.Time {
	if !ms.Valid {
		return time.Time{}
	}
	return time.UnixMilli(ms.Int64)
}

// Report sums the samples taken in [Since, Until]. Each sample stands for
// its interval (the time since the sample before it, capped at MaxGap), so
// hours are sums of intervals. Its JSON form
// is stable:
//
//	since, until            the period asked for (RFC 3339)
//	samples                 samples in it
//	sampled_hours           the time they stand for
//	users[]:
//	  user
//	  gpu_hours_allocated   sum of interval x GPUs held by the user's running containers
//	  gpu_hours_busy        the part where the container's own processes' utilisation
//	                        on the GPU was >= the busy threshold recorded with the sample
//	  gpu_hours_idle        allocated - busy (unknown utilisation counts as idle)
//	  efficiency            busy / allocated, 0..1; null when nothing was allocated or
//	                        the utilisation was never known (no NVML, fake GPUs, MIG)
//	  cpu_hours             sum of cpu_percent/100 x interval
//	  peak_memory_bytes     the most memory one of its containers used in one sample
//	  containers            distinct containers
//	  samples               samples in which it had a container
//	gpus[]:
//	  index, uuid
//	  busy_percent          share of its sampled time with device utilisation >= the
//	                        threshold, 0..100; null when never known
//	  allocated_percent     share of its sampled time held by some container (running
//	                        or stopped), 0..100
//	  unattributed_gpu_hours  time with a host or foreign process on it
type Report struct {
	Since        time.Time   `json:"since"`
	Until        time.Time   `json:"until"`
	Samples      int         `json:"samples"`
	SampledHours float64     `json:"sampled_hours"`
	Users        []UserUsage `json:"users"`
	GPUs         []GPUUsage  `json:"gpus"`
}

// UserUsage is one user's line of a Report.
type UserUsage struct {
	User              string   `json:"user"`
	GPUHoursAllocated float64  `json:"gpu_hours_allocated"`
	GPUHoursBusy      float64  `json:"gpu_hours_busy"`
	GPUHoursIdle      float64  `json:"gpu_hours_idle"`
	Efficiency        *float64 `json:"efficiency"`
	CPUHours          float64  `json:"cpu_hours"`
	PeakMemoryBytes   uint64   `json:"peak_memory_bytes"`
	Containers        int      `json:"containers"`
	Samples           int      `json:"samples"`
}

// GPUUsage is one GPU's line of a Report.
type GPUUsage struct {
	Index                int      `json:"index"`
	UUID                 string   `json:"uuid"`
	BusyPercent          *float64 `json:"busy_percent"`
	AllocatedPercent     float64  `json:"allocated_percent"`
	UnattributedGPUHours float64  `json:"unattributed_gpu_hours"`
}

const msPerHour = float64(time.Hour / time.Millisecond)

func hours(ms int64) float64 { return float64(ms) / msPerHour }

// Report sums [since, until].
func (db *DB) Report(since, until time.Time) (Report, error) {
	r := Report{Since: since, Until: until, Users: []UserUsage{}, GPUs: []GPUUsage{}}
	from, to := since.UnixMilli(), until.UnixMilli()
	err := db.read(func(q querier) error {
		var ms int64
		if err := q.QueryRow(`SELECT COUNT(*), COALESCE(SUM(interval_ms), 0) FROM samples
			WHERE time_ms BETWEEN ? AND ?`, from, to).Scan(&r.Samples, &ms); err != nil {
			return err
		}
		r.SampledHours = hours(ms)

		rows, err := q.Query(`SELECT c.user,
				COALESCE(SUM(CASE WHEN c.running THEN s.interval_ms * c.n_gpus ELSE 0 END), 0),
				COALESCE(SUM(c.cpu_percent * s.interval_ms), 0),
				COALESCE(MAX(c.memory_bytes), 0),
				COUNT(DISTINCT c.container_id),
				COUNT(DISTINCT c.sample_id)
			FROM containers c JOIN samples s ON s.id = c.sample_id
			WHERE s.time_ms BETWEEN ? AND ? GROUP BY c.user ORDER BY c.user`, from, to)
		if err != nil {
			return err
		}
		byUser := map[string]int{}
		for rows.Next() {
			var u UserUsage
			var alloc, peak int64
			var cpu float64
			if err := rows.Scan(&u.User, &alloc, &cpu, &peak, &u.Containers, &u.Samples); err != nil {
				rows.Close()
				return err
			}
			u.GPUHoursAllocated = hours(alloc)
			u.CPUHours = cpu / 100 / msPerHour
			u.PeakMemoryBytes = uint64(peak)
			byUser[u.User] = len(r.Users)
			r.Users = append(r.Users, u)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}

		rows, err = q.Query(`SELECT g.user,
				COALESCE(SUM(CASE WHEN g.busy THEN s.interval_ms ELSE 0 END), 0),
				COUNT(g.busy)
			FROM container_gpus g JOIN samples s ON s.id = g.sample_id
			WHERE g.running AND s.time_ms BETWEEN ? AND ? GROUP BY g.user`, from, to)
		if err != nil {
			return err
		}
		for rows.Next() {
			var user string
			var busy int64
			var known int
			if err := rows.Scan(&user, &busy, &known); err != nil {
				rows.Close()
				return err
			}
			i, ok := byUser[user]
			if !ok {
				continue
			}
			u := &r.Users[i]
			u.GPUHoursBusy = hours(busy)
			if known > 0 && u.GPUHoursAllocated > 0 {
				e := u.GPUHoursBusy / u.GPUHoursAllocated
				u.Efficiency = &e
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i := range r.Users {
			r.Users[i].GPUHoursIdle = r.Users[i].GPUHoursAllocated - r.Users[i].GPUHoursBusy
		}

		rows, err = q.Query(`SELECT g.gpu_uuid, MAX(g.gpu_index),
				COALESCE(SUM(s.interval_ms), 0),
				COALESCE(SUM(CASE WHEN g.busy THEN s.interval_ms ELSE 0 END), 0),
				COUNT(g.busy),
				COALESCE(SUM(CASE WHEN g.allocated THEN s.interval_ms ELSE 0 END), 0),
				COALESCE(SUM(CASE WHEN g.unattributed THEN s.interval_ms ELSE 0 END), 0)
			FROM gpus g JOIN samples s ON s.id = g.sample_id
			WHERE s.time_ms BETWEEN ? AND ?
			GROUP BY g.gpu_uuid, CASE WHEN g.gpu_uuid = '' THEN g.gpu_index END
			ORDER BY MAX(g.gpu_index), g.gpu_uuid`, from, to)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var g GPUUsage
			var total, busy, alloc, other int64
			var known int
			if err := rows.Scan(&g.UUID, &g.Index, &total, &busy, &known, &alloc, &other); err != nil {
				return err
			}
			if known > 0 && total > 0 {
				p := 100 * float64(busy) / float64(total)
				g.BusyPercent = &p
			}
			if total > 0 {
				g.AllocatedPercent = 100 * float64(alloc) / float64(total)
			}
			g.UnattributedGPUHours = hours(other)
			r.GPUs = append(r.GPUs, g)
		}
		return rows.Err()
	})
	if err != nil {
		return Report{}, db.classify(err, "reading the report")
	}
	return r, nil
}
