package proxy

import "sync"

// bufferPool reuses ReverseProxy's copy buffers. Without it every response allocates 32 KiB,
// which was most of the gateway's garbage and much of its CPU under load.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (p *bufferPool) Get() []byte { return *p.pool.Get().(*[]byte) }

func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }
