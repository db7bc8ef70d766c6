package audit

import (
	"fmt"
	"sync"
	"testing"

	"github.com/corral-dev/corral/internal/bus/bustest"
)

// BenchmarkAppendConcurrent measures appends per second on one replica with 1, 8 and
// 32 concurrent appenders: concurrent appends share one atomic batch.
func BenchmarkAppendConcurrent(b *testing.B) {
	for _, workers := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("appenders=%d", workers), func(b *testing.B) {
			l := open(b, bustest.Open(b))
			b.ResetTimer()
			var wg sync.WaitGroup
			per := b.N/workers + 1
			for w := range workers {
				wg.Go(func() {
					for n := range per {
						r := call("bench", fmt.Sprintf("t.w%d-%d", w, n))
						if _, err := l.Append(b.Context(), &r); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(per*workers)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}
