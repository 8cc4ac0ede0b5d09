// Node 20 lacks Promise.withResolvers, which transitive packages call. Import this module first
// (static imports are evaluated in order) and load those packages with dynamic `import()`.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
