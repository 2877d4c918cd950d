// The dashboard's heat map of one peer (issue 15): the volume's ranges folded into at most a few
// dozen cells, each with its counts in the peer-unhardened record (seed Fig. 3: current, old and
// their union, the tracks the peer may hold only in RAM) and in the out-of-sync set (tracks the
// peer lacks). Pure: counts a word of the bitmaps at a time (bitmap.ts), cheap enough to run for
// every peer a few times a second.
import type { TrackBitmap } from './bitmap.js';
import type { PeerUnhardenedRecord } from './peer-record.js';

export interface HeatMap {
  /** Consecutive ranges folded into one cell (the last cell may hold fewer). */
  rangesPerCell: number;
  /** Tracks of a full cell: rangesPerCell times the range's tracks. */
  tracksPerCell: number;
  rangeTracks: number;
  trackCount: number;
  /** One entry per cell, in volume order. */
  current: number[];
  old: number[];
  united: number[];
  outOfSync: number[];
}

export function heatMap(record: PeerUnhardenedRecord, outOfSync: TrackBitmap, maxCells: number): HeatMap {
  if (!Number.isInteger(maxCells) || maxCells < 1) throw new RangeError(`heat map needs at least one cell (got ${maxCells})`);
  const rangesPerCell = Math.ceil(record.rangeCount / maxCells);
  const cells = Math.ceil(record.rangeCount / rangesPerCell);
  const map: HeatMap = {
    rangesPerCell, tracksPerCell: rangesPerCell * record.rangeTracks, rangeTracks: record.rangeTracks, trackCount: record.trackCount,
    current: new Array<number>(cells).fill(0), old: new Array<number>(cells).fill(0),
    united: new Array<number>(cells).fill(0), outOfSync: new Array<number>(cells).fill(0),
  };
  for (let range = 0; range < record.rangeCount; range++) {
    const cell = Math.floor(range / rangesPerCell);
    map.current[cell]! += record.currentCount(range);
    map.old[cell]! += record.oldCount(range);
    map.united[cell]! += record.unitedCountOfRange(range);
  }
  for (let cell = 0; cell < cells; cell++) {
    const first = cell * map.tracksPerCell;
    map.outOfSync[cell] = outOfSync.countSpan(first, Math.min(record.trackCount, first + map.tracksPerCell));
  }
  return map;
}
