type Handler = (...args: any[]) => void;

/** A minimal typed event emitter (no dependency, works in browsers and Node). */
export class Emitter<Events extends { [K in keyof Events]: unknown[] }> {
  private handlers = new Map<keyof Events, Set<Handler>>();

  /** Listen to `event`; returns a function that removes the listener. */
  on<K extends keyof Events>(event: K, handler: (...args: Events[K]) => void): () => void {
    let set = this.handlers.get(event);
    if (!set) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(handler as unknown as Handler);
    return () => this.off(event, handler);
  }

  /** Listen to the next `event` only. */
  once<K extends keyof Events>(event: K, handler: (...args: Events[K]) => void): () => void {
    const off = this.on(event, (...args) => {
      off();
      handler(...args);
    });
    return off;
  }

  off<K extends keyof Events>(event: K, handler: (...args: Events[K]) => void): void {
    this.handlers.get(event)?.delete(handler as unknown as Handler);
  }

  /**
   * Call every listener of `event`. A listener that throws does not stop the others
   * nor the SDK: the exception is reported asynchronously (like a DOM event handler).
   */
  protected emit<K extends keyof Events>(event: K, ...args: Events[K]): void {
    const set = this.handlers.get(event);
    if (!set || set.size === 0) return;
    for (const handler of [...set]) {
      try {
        (handler as unknown as (...a: Events[K]) => void)(...args);
      } catch (error) {
        setTimeout(() => {
          throw error;
        }, 0);
      }
    }
  }
}
